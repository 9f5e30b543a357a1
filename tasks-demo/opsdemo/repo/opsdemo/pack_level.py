def pack_level(a, b):
    return a - b
