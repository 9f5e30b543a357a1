def merge_width(a, b):
    return a + b + 1
