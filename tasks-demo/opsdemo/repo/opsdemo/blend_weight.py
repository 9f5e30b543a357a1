def blend_weight(a, b):
    return a + b
