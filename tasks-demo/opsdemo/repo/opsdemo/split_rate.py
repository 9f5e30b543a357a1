def split_rate(a, b):
    return a + b + 8
