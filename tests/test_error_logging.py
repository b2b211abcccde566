"""An expected user error is one log line, not a traceback (issue #19 item 14)."""
import logging

import pytest

from app.components.errors import guard
from backends.errors import InputError


def test_a_user_error_is_logged_once_without_a_traceback(caplog):
    import gradio as gr

    @guard
    def handler(x):
        raise InputError(f"k must be between 1 and 200, but is {x}")

    with caplog.at_level(logging.INFO, logger="latent_atlas"), pytest.raises(gr.Error) as info:
        handler(500)
    assert info.value.print_exception is False  # Gradio's queue would print a traceback otherwise
    lines = [r for r in caplog.records if r.name == "latent_atlas"]
    assert len(lines) == 1 and "k must be between 1 and 200, but is 500" in lines[0].getMessage()
    assert lines[0].exc_info is None


def test_a_bug_is_not_turned_into_a_user_error():
    @guard
    def handler():
        raise KeyError("bug")

    with pytest.raises(KeyError):
        handler()
