"""Every text and list argument of the API is bounded before any work; messages show no server paths."""
import time

import pytest

from app.components.errors import api_guard, scrub_paths
from backends.errors import InputError


def test_oversized_arguments_are_refused_by_size_at_once():
    import gradio as gr

    calls = []

    @api_guard
    def regions_generate(prompts: dict, global_prompt: str = "") -> str:
        calls.append(1)
        return "ok"

    @api_guard
    def directions_edit(source: str, direction_ids: list[str], strengths: list[float]) -> str:
        calls.append(1)
        return "ok"

    t0 = time.perf_counter()
    with pytest.raises(gr.Error, match="`global_prompt` is 5,000,000 characters long; at most 10,000"):
        regions_generate({"red": "a red circle"}, "x" * 5_000_000)
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(gr.Error, match=r"`prompts\['red'\]` is 100,000 characters long"):
        regions_generate({"red": "y" * 100_000})
    with pytest.raises(gr.Error, match="`direction_ids` has 10,000 items; at most 32"):
        directions_edit("s", ["pc1"] * 10_000, [1.0] * 10_000)
    assert not calls
    assert regions_generate({"red": "a red circle"}, "on black") == "ok"


def test_messages_name_the_file_not_where_the_server_keeps_it():
    msg = scrub_paths("cannot read /tmp/gradio/3f2a9c1e/upload/cat.png: not an image (/root/.cache/x/y.npy)")
    assert msg == "cannot read cat.png: not an image (y.npy)"
    assert scrub_paths("use `python -m backends.shapes.train encoders`") == "use `python -m backends.shapes.train encoders`"
    assert scrub_paths("values 1/2 and a/b stay") == "values 1/2 and a/b stay"

    from app.components.errors import guard

    @guard
    def f():
        raise InputError("bad file /var/tmp/private/abc123/data.csv")

    import gradio as gr

    with pytest.raises(gr.Error) as e:
        f()
    assert "private" not in str(e.value) and "data.csv" in str(e.value)
