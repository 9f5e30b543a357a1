def step_limit(a, b):
    return a + b
