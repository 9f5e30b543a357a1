def blend_width(a, b):
    return a * b
