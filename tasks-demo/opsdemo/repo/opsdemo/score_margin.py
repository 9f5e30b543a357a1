def score_margin(a, b):
    return a + b
