def join_width(a, b):
    return a >= b
