def join_price(a, b):
    return a + b
