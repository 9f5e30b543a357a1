def blend_limit(a, b):
    return a + b + 1
