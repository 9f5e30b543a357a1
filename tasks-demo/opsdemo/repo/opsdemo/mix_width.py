def mix_width(a, b):
    return a - b
