def join_weight(a, b):
    return a * b
