def split_limit(a, b):
    return a + b + 8
