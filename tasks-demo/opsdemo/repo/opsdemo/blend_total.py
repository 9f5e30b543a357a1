def blend_total(a, b):
    return a >= b
