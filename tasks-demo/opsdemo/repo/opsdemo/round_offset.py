def round_offset(a, b):
    return a + b + 2
