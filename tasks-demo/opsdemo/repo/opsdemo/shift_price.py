def shift_price(a, b):
    return a <= b
