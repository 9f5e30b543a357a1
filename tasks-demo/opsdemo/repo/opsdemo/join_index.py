def join_index(a, b):
    return a + b
