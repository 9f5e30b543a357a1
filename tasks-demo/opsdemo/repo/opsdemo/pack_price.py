def pack_price(a, b):
    return a * b
