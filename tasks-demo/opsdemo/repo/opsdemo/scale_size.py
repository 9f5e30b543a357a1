def scale_size(a, b):
    return a + b
