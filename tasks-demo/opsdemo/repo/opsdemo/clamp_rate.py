def clamp_rate(a, b):
    return a > b
