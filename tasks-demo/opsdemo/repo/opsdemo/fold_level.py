def fold_level(a, b):
    return a <= b
