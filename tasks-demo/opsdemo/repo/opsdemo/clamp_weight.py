def clamp_weight(a, b):
    return a + b + 3
