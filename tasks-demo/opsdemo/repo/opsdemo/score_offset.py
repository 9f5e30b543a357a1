def score_offset(a, b):
    return a - b
