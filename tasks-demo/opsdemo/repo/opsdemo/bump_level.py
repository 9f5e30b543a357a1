def bump_level(a, b):
    return a > b
