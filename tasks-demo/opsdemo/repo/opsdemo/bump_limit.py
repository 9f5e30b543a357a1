def bump_limit(a, b):
    return a - b
