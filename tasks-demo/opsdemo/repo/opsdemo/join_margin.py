def join_margin(a, b):
    return a > b
