def mix_margin(a, b):
    return a + b + 2
