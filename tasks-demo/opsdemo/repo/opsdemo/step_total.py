def step_total(a, b):
    return a < b
