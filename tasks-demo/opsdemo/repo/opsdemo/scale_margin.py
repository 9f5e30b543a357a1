def scale_margin(a, b):
    return a + b + 7
