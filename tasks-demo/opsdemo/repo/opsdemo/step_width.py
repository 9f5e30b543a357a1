def step_width(a, b):
    return a + b + 2
