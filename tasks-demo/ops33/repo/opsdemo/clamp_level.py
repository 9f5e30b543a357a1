def clamp_level(a, b):
    return a * b
