def pack_limit(a, b):
    return a + b + 4
