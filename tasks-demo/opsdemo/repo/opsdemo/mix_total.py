def mix_total(a, b):
    return a > b
