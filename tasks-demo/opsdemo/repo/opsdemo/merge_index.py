def merge_index(a, b):
    return a * b
