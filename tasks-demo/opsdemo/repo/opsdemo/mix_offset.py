def mix_offset(a, b):
    return a * b
