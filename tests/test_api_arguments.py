"""Every API endpoint (gr.api) checks its arguments' types before running: a null, a list or text
where a number belongs gets a message naming the argument, never an exception from deep inside."""
import math
import types
import typing

import gradio as gr
import pytest

from app.components.errors import check_argument
from backends.errors import InputError


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from app.main import create_app
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(tmp_path_factory.mktemp("cache")), admin_password="pw")
    return create_app(settings, Backends(settings))


def api_endpoints(demo):
    """The gr.api endpoints: named functions with no UI event behind them (their inputs come from clients)."""
    return [f for f in demo.fns.values() if f.api_name and not f.targets]


def wrong_value(hint):
    """A JSON value of the wrong type for this hint (None where the hint does not allow it)."""
    from gradio.data_classes import FileData

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return wrong_value(inner[0]) if len(inner) == 1 else None
    if hint is str:
        return 5
    if hint in (int, float, bool) or hint is list or typing.get_origin(hint) is list or hint is dict:
        return "x"
    if hint is FileData:
        return 5
    return None


def test_every_api_endpoint_checks_its_arguments(demo):
    import inspect

    eps = api_endpoints(demo)
    assert len(eps) >= 40, [f.api_name for f in eps]  # every tab registers its API
    unchecked = [f.api_name for f in eps if not getattr(f.fn, "arguments_checked", False)]
    assert not unchecked, f"API endpoints without argument checks: {unchecked}"
    tried = 0
    for f in eps:
        fn = inspect.unwrap(f.fn)
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters.values())
        for p in params:
            bad = wrong_value(hints.get(p.name))
            if bad is None:
                continue
            with pytest.raises(gr.Error) as err:  # checked before the endpoint runs
                f.fn(**{p.name: bad})
            assert f"`{p.name}`" in str(err.value.message), (f.api_name, p.name, err.value.message)
            tried += 1
    assert tried >= 150


@pytest.mark.parametrize("hint, value, expected", [
    (int, 3.0, 3), (int, 7, 7), (float, 2, 2), (bool, 1, True), (bool, False, False), (str, "", ""),
    (list[int], [1.0, 2], [1, 2]), (list[str] | None, None, None), (list, ("a", 1), ["a", 1]), (dict, {}, {}),
])
def test_arguments_of_the_right_type_pass(hint, value, expected):
    out = check_argument("a", value, hint)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("hint, value, message", [
    (int, 3.5, "whole number"), (int, math.nan, "whole number"), (int, True, "whole number"), (int, "3", "whole number"),
    (float, "1", "has to be a number"), (float, None, "missing"), (bool, "yes", "true or false"), (str, [1], "text"),
    (list[int], [1, "b"], r"`a\[1\]` has to be a whole number"), (list, "abc", "list"), (dict, [], "object"),
])
def test_arguments_of_the_wrong_type_are_named(hint, value, message):
    with pytest.raises(InputError, match=message):
        check_argument("a", value, hint)


def test_floats_keep_nan_for_the_endpoint_to_judge():
    assert math.isnan(check_argument("a", math.nan, float))


@pytest.mark.parametrize("value", ["/tmp/gradio/x\x00.png", math.nan, ["a"]])
def test_upload_paths_that_are_not_paths_are_refused(value):
    from app.components.files import uploaded_path

    with pytest.raises(InputError, match="canvas: "):
        uploaded_path(value, "canvas")
