def merge_margin(a, b):
    return a <= b
