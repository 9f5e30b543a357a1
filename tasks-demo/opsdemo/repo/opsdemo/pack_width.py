def pack_width(a, b):
    return a - b
