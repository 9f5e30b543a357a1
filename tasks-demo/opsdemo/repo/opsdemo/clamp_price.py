def clamp_price(a, b):
    return a - b
