def shift_offset(a, b):
    return a - b
