def count_total(a, b):
    return a + b
