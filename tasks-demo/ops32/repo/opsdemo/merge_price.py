def merge_price(a, b):
    return a + b + 1
