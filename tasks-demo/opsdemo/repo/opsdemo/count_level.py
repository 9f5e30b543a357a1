def count_level(a, b):
    return a * b
