def pack_rate(a, b):
    return a - b
