def pack_total(a, b):
    return a + b + 1
