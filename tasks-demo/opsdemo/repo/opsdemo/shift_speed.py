def shift_speed(a, b):
    return a + b
