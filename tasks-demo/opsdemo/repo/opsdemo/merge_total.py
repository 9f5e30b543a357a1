def merge_total(a, b):
    return a + b
