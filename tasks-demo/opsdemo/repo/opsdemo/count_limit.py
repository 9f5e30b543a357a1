def count_limit(a, b):
    return a * b
