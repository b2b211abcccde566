"""Errors that carry a message meant for the person using the app."""


class InputError(ValueError):
    """Bad user input. The message names the argument (or file) and what was wrong."""


def whole_number(v, name: str, lo: int, hi: int) -> int:
    """`v` as an int in [lo, hi] (a whole float such as 3.0 is accepted); InputError naming `name` otherwise."""
    import math

    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{name} has to be a whole number, but is {v!r}") from None
    if not math.isfinite(f) or f != int(f) or not lo <= f <= hi:
        raise InputError(f"{name} has to be a whole number between {lo} and {hi}, but is {v!r}")
    return int(f)


def number_between(v, name: str, lo: float, hi: float) -> float:
    """`v` as a finite float in [lo, hi]; InputError naming `name` otherwise."""
    import math

    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{name} has to be a number, but is {v!r}") from None
    if not math.isfinite(f) or not lo <= f <= hi:
        raise InputError(f"{name} has to be between {lo:g} and {hi:g}, but is {v!r}")
    return f
