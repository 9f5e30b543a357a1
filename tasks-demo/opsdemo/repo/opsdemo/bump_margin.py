def bump_margin(a, b):
    return a + b
