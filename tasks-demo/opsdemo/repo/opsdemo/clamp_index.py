def clamp_index(a, b):
    return a > b
