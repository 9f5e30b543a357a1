def shift_width(a, b):
    return a - b
