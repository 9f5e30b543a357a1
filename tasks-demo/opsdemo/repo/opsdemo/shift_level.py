def shift_level(a, b):
    return a - b
