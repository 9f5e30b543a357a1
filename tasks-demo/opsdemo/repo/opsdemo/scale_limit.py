def scale_limit(a, b):
    return a + b
