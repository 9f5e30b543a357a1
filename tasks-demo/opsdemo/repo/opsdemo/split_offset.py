def split_offset(a, b):
    return a + b
