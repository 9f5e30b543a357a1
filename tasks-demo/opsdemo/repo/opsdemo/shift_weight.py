def shift_weight(a, b):
    return a * b
