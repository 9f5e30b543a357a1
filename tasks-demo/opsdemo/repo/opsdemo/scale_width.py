def scale_width(a, b):
    return a >= b
