def scale_offset(a, b):
    return a * b
