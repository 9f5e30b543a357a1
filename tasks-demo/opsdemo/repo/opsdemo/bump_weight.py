def bump_weight(a, b):
    return a * b
