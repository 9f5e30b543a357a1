def fold_size(a, b):
    return a <= b
