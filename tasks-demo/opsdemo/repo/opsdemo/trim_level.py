def trim_level(a, b):
    return a * b
