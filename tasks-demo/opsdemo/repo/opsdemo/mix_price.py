def mix_price(a, b):
    return a * b
