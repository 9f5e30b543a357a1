def merge_weight(a, b):
    return a <= b
