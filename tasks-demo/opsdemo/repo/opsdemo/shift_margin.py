def shift_margin(a, b):
    return a > b
