def shift_limit(a, b):
    return a < b
