def join_limit(a, b):
    return a > b
