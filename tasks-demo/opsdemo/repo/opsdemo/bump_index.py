def bump_index(a, b):
    return a + b + 8
