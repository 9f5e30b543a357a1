def scale_index(a, b):
    return a > b
