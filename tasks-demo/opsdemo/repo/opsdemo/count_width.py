def count_width(a, b):
    return a * b
