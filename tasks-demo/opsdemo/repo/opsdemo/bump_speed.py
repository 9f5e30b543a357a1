def bump_speed(a, b):
    return a <= b
