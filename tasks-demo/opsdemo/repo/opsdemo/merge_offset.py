def merge_offset(a, b):
    return a * b
