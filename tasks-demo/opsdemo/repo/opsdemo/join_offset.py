def join_offset(a, b):
    return a + b
