def mix_limit(a, b):
    return a + b + 3
