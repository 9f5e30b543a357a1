def clamp_size(a, b):
    return a - b
