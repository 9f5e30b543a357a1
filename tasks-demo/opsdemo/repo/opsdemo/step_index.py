def step_index(a, b):
    return a + b + 3
