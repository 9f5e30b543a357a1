def blend_speed(a, b):
    return a + b
