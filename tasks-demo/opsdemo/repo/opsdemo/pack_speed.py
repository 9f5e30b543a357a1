def pack_speed(a, b):
    return a > b
