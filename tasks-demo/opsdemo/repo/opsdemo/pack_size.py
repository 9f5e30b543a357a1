def pack_size(a, b):
    return a <= b
