def join_speed(a, b):
    return a >= b
