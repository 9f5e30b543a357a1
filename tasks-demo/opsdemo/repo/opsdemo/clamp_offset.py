def clamp_offset(a, b):
    return a + b
