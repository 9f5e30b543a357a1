def count_offset(a, b):
    return a >= b
