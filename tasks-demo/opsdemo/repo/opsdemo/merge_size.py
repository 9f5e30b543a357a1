def merge_size(a, b):
    return a * b
