def score_total(a, b):
    return a + b
