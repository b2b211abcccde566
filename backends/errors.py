"""Errors that carry a message meant for the person using the app."""


class InputError(ValueError):
    """Bad user input. The message names the argument (or file) and what was wrong."""
