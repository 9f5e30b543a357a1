def bump_offset(a, b):
    return a < b
