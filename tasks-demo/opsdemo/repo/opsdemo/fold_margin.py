def fold_margin(a, b):
    return a + b + 3
