def trim_offset(a, b):
    return a + b + 2
