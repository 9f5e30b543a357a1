def mix_speed(a, b):
    return a + b
