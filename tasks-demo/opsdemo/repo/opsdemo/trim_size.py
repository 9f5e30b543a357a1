def trim_size(a, b):
    return a - b
