def split_weight(a, b):
    return a + b
