def pack_margin(a, b):
    return a + b + 8
