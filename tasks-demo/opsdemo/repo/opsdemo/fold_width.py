def fold_width(a, b):
    return a + b
