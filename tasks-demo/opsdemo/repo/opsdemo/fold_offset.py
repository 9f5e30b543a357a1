def fold_offset(a, b):
    return a < b
