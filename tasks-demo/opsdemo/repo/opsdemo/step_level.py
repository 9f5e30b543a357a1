def step_level(a, b):
    return a >= b
