def mix_level(a, b):
    return a - b
