def shift_total(a, b):
    return a * b
