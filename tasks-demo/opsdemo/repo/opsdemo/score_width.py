def score_width(a, b):
    return a * b
