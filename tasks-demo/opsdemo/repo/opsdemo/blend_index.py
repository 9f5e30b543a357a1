def blend_index(a, b):
    return a + b + 5
