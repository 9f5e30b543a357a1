def mix_size(a, b):
    return a + b + 4
