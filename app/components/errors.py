"""One way for every tab to turn user-facing errors into messages in the UI."""
from __future__ import annotations

import functools
import inspect
import logging
import math
import re
import types
import typing

import gradio as gr

from backends.errors import InputError

# InputError: bad input, named. FileNotFoundError: model weights that are not there (with a hint
# how to make them). Anything else is a bug and goes to the log as Gradio reports it.
USER_ERRORS = (InputError, FileNotFoundError)
LOG = logging.getLogger("latent_atlas")


def guard(fn):
    """Wrap an event handler: a user error becomes gr.Error (its message shown in the UI and sent to
    API clients); the server keeps serving."""

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            # an expected mistake: one line in the log, no traceback (those are for bugs)
            LOG.info("user error in %s: %s", getattr(fn, "__name__", "handler"), str(exc)[:300].replace("\n", " "))
            raise gr.Error(scrub_paths(str(exc)), print_exception=False) from None

    return inner


_ABS_PATH = re.compile(r"(?<![\w:/.])/(?:[^\s'\"/:]+/)+([^\s'\"/:]*)")


def scrub_paths(message: str) -> str:
    """A message with server paths cut to their file name ("/tmp/gradio/3f2a…/cat.png" -> "cat.png"):
    users need to know which file, not where this server keeps it."""
    return _ABS_PATH.sub(lambda m: m.group(1) or "(a folder)", message)


# Bounds on what an API client may send, checked before any work (issue: a 5 MB prompt took 35 s to refuse).
MAX_PROMPT_CHARS = 10_000  # any text argument whose name says prompt
MAX_TEXT_CHARS = 100_000  # any other text argument
MAX_LIST_ITEMS = 100_000
MAX_LIST_ITEMS_BY_NAME = {"direction_ids": 32, "strengths": 32}
MAX_DICT_ITEMS = 1_000


def _check_text(name: str, value: str) -> str:
    limit = MAX_PROMPT_CHARS if "prompt" in name.split("[")[0] else MAX_TEXT_CHARS
    if len(value) > limit:
        raise InputError(f"`{name}` is {len(value):,} characters long; at most {limit:,} are accepted")
    return value


def api_guard(fn):
    """guard() for a gr.api endpoint, whose arguments come from API clients as JSON: each argument is
    first checked against the function's type hints (str, int, float, bool, list[...], dict, files),
    so that a null, a list or a string where a number belongs gets a message naming the argument
    instead of an exception from deep inside."""
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        bound = sig.bind_partial(*args, **kwargs)
        for name, value in list(bound.arguments.items()):
            if name in hints:
                default = sig.parameters[name].default
                bound.arguments[name] = check_argument(name, value, hints[name], none_ok=default is None)
        return fn(*bound.args, **bound.kwargs)

    checked.arguments_checked = True
    return guard(checked)


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '…' if len(text) > 40 else text}"


def check_argument(name: str, value, hint, *, none_ok: bool = False):
    """`value` as the type `hint` names (ints that arrive as whole floats become ints); InputError
    naming `name` otherwise. Types other than the JSON ones pass unchecked."""
    from gradio.data_classes import FileData

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return check_argument(name, value, inner[0], none_ok=none_ok) if len(inner) == 1 else value
    if value is None:
        if none_ok:
            return None
        raise InputError(f"`{name}` is missing (null)")
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"`{name}` has to be text, but is {_describe(value)}")
        return _check_text(name, value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise InputError(f"`{name}` has to be true or false, but is {_describe(value)}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"`{name}` has to be a whole number, but is {_describe(value)}")
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise InputError(f"`{name}` has to be a whole number, but is {value!r}")
            return int(value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"`{name}` has to be a number, but is {_describe(value)}")
        return value  # NaN and infinities pass: each endpoint says what range it takes
    if hint is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"`{name}` has to be a list, but is {_describe(value)}")
        limit = MAX_LIST_ITEMS_BY_NAME.get(name, MAX_LIST_ITEMS)
        if len(value) > limit:
            raise InputError(f"`{name}` has {len(value):,} items; at most {limit:,} are accepted")
        if args:
            return [check_argument(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value)]
        return list(value)
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"`{name}` has to be an object (a dict), but is {_describe(value)}")
        if len(value) > MAX_DICT_ITEMS:
            raise InputError(f"`{name}` has {len(value):,} entries; at most {MAX_DICT_ITEMS:,} are accepted")
        for k, v in value.items():  # e.g. regions_generate's {colour: prompt}
            if isinstance(v, str):
                _check_text(f"{name}[{k!r}]", v)
        return value
    if hint is FileData:
        if not isinstance(value, (FileData, dict, str)):
            raise InputError(f"`{name}` has to be a file (gradio_client: handle_file(path)), but is {_describe(value)}")
        return value
    return value
