def count_margin(a, b):
    return a * b
