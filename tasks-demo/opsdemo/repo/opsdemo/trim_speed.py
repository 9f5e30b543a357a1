def trim_speed(a, b):
    return a - b
