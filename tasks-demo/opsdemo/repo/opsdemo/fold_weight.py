def fold_weight(a, b):
    return a + b + 2
