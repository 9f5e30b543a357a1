def round_index(a, b):
    return a + b + 6
