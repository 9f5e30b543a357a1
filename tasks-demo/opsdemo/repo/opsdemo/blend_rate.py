def blend_rate(a, b):
    return a + b
