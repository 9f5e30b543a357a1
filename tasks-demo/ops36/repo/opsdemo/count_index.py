def count_index(a, b):
    return a > b
