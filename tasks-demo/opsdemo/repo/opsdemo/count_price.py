def count_price(a, b):
    return a < b
