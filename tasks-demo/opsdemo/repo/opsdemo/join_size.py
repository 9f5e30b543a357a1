def join_size(a, b):
    return a + b + 3
