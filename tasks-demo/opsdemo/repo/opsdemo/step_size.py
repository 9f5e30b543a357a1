def step_size(a, b):
    return a <= b
