def score_weight(a, b):
    return a < b
