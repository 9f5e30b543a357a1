def trim_width(a, b):
    return a > b
