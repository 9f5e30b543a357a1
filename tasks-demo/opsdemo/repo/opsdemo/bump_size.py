def bump_size(a, b):
    return a <= b
