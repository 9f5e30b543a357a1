def trim_rate(a, b):
    return a - b
