def blend_size(a, b):
    return a + b
