def trim_weight(a, b):
    return a + b + 1
