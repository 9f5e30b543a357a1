def blend_price(a, b):
    return a >= b
