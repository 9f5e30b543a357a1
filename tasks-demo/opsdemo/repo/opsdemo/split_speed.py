def split_speed(a, b):
    return a * b
