def scale_rate(a, b):
    return a * b
