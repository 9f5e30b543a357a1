def fold_limit(a, b):
    return a + b + 8
