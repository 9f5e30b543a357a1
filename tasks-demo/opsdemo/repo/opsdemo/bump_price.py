def bump_price(a, b):
    return a - b
