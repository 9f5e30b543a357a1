def split_price(a, b):
    return a + b
