"""One way for every tab to turn user-facing errors into messages in the UI."""
from __future__ import annotations

import functools

import gradio as gr

from backends.errors import InputError

# InputError: bad input, named. FileNotFoundError: model weights that are not there (with a hint
# how to make them). Anything else is a bug and goes to the log as Gradio reports it.
USER_ERRORS = (InputError, FileNotFoundError)


def guard(fn):
    """Wrap an event handler: a user error becomes gr.Error (its message shown in the UI and sent to
    API clients); the server keeps serving."""

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None

    return inner
