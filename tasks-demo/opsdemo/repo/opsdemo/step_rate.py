def step_rate(a, b):
    return a + b
