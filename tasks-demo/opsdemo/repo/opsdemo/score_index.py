def score_index(a, b):
    return a + b + 4
