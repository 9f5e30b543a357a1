def round_level(a, b):
    return a + b
