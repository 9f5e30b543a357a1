def count_speed(a, b):
    return a < b
