def score_price(a, b):
    return a * b
