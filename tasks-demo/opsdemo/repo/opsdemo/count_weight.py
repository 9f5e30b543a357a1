def count_weight(a, b):
    return a + b + 6
