def merge_level(a, b):
    return a - b
