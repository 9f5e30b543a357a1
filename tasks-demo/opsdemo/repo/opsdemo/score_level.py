def score_level(a, b):
    return a - b
