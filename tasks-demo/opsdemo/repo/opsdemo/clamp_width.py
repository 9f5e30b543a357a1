def clamp_width(a, b):
    return a - b
