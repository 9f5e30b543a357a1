def mix_rate(a, b):
    return a + b
