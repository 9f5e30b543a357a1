def step_price(a, b):
    return a >= b
