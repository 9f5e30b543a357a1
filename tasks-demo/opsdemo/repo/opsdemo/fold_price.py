def fold_price(a, b):
    return a + b + 8
