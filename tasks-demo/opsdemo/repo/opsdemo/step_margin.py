def step_margin(a, b):
    return a - b
