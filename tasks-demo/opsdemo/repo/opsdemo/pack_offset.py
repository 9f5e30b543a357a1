def pack_offset(a, b):
    return a - b
