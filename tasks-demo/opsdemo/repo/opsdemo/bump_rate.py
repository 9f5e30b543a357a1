def bump_rate(a, b):
    return a + b
