def fold_total(a, b):
    return a - b
