def round_margin(a, b):
    return a <= b
