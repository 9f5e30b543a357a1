def trim_index(a, b):
    return a + b
