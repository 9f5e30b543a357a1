def count_rate(a, b):
    return a >= b
