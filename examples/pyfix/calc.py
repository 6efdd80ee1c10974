"""A tiny calculator with a bug for hangar's example task to fix."""


def add(a, b):
    return a - b


def mul(a, b):
    return a * b
