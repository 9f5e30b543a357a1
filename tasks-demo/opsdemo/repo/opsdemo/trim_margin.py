def trim_margin(a, b):
    return a >= b
