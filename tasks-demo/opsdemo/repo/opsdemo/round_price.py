def round_price(a, b):
    return a + b
