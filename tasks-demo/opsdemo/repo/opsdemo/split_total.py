def split_total(a, b):
    return a + b + 4
