def clamp_total(a, b):
    return a >= b
