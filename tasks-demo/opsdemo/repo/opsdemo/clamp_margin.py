def clamp_margin(a, b):
    return a - b
