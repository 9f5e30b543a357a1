def pack_weight(a, b):
    return a + b
