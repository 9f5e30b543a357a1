def scale_total(a, b):
    return a + b
