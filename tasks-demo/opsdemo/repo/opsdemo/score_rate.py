def score_rate(a, b):
    return a + b
