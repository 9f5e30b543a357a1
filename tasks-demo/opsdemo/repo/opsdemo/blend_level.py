def blend_level(a, b):
    return a * b
