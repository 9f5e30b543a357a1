def join_rate(a, b):
    return a * b
