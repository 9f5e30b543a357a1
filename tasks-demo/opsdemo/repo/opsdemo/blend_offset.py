def blend_offset(a, b):
    return a * b
