"""Fuzzing every API endpoint (issue #20 item 10): hypothesis draws arguments of the right JSON type
and of the wrong one (text, numbers at and past the edges, NaN, empty and long lists, nulls, missing
ids, path tricks) and calls each endpoint as the server does (through its argument checks and its
error guard, in-process). What a client may see: an answer, or a message (gr.Error) that shows no
server path or Python internals. Anything else escaping is a bug.

The model endpoints (their queues are model-*: generating, editing, sampling banks, training heads)
get their arguments drawn the same way but their sizes (steps, frames, samples, k) held small, so
that a drawn example costs at most a few model steps, on a budget of five examples an endpoint (derandomized: the same ones in every run)
(each draws a new request, so a model endpoint costs tens of seconds here)."""
from __future__ import annotations

import inspect
import re
import types
import typing

import gradio as gr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ADMIN = "fuzz-admin-pw"
SERVER_INTERNALS = re.compile(r"/tmp/|/work/|/home/|site-packages|Traceback| object at 0x|<function ")
# arguments that size the work of a model endpoint: held small there (the bounds tests cover their limits)
SIZES = re.compile(r"steps|budget|frames|n_samples|samples|^n$|^k$|batch|n_anchors|iterations|epochs|per_class|max_")


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory):
    from app.main import create_app
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(tmp_path_factory.mktemp("cache")), admin_password=ADMIN,
                                 annotations_db=str(tmp_path_factory.mktemp("db") / "a.sqlite"))
    backends = Backends(settings)
    backends.directions_bank_size = 8  # a sampled bank of 8, not the tab's 200
    demo = create_app(settings, backends)
    eps = {f.api_name: f for f in demo.fns.values() if f.api_name and not f.targets}
    assert len(eps) >= 40
    return eps


def _drop_none(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner[0] if len(inner) == 1 else hint
    return hint


TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["digits", "shapes", "digit-0001", "label=3", "../../etc/passwd", "/etc/passwd", "\x00",
                     "upload:x:000000000000", "a red circle", "cluster 1", "{}", "[1, 2]", "nan", "-1", " " * 5,
                     "cosine", "umap", "pca", "kmeans", "csv", "relative", "A", "B", ADMIN, "ÿ" * 300]),
)
NUMBER = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0, 1, -1, 2, 2**31, 2**63, 0.5, -0.0]))


def value_for(name: str, hint, model: bool):
    """A strategy for one argument: mostly the hinted type, sometimes another JSON type."""
    hint = _drop_none(hint)
    if model and SIZES.search(name) and hint in (int, float):
        right = st.integers(0, 3)
    elif hint is str:
        right = TEXT
    elif hint in (int, float):
        right = NUMBER
    elif hint is bool:
        right = st.booleans()
    elif hint is list or typing.get_origin(hint) is list:
        right = st.lists(st.one_of(TEXT, NUMBER), max_size=6)
    elif hint is dict:
        right = st.dictionaries(st.text(max_size=8), st.one_of(TEXT, NUMBER), max_size=4)
    else:  # files and the rest: what a broken client may send
        right = st.one_of(st.none(), TEXT, st.fixed_dictionaries({"path": TEXT}))
    wrong = st.one_of(st.none(), TEXT, NUMBER, st.lists(NUMBER, max_size=3), st.just({}))
    return st.one_of(right, right, right, wrong)


def call_drawn(f, data, model: bool):
    from app.components.security import LIMITER

    fn = inspect.unwrap(f.fn)
    hints = typing.get_type_hints(fn)
    kwargs = {}
    for p in inspect.signature(fn).parameters.values():
        if p.default is not inspect.Parameter.empty and data.draw(st.booleans(), label=f"omit {p.name}"):
            continue
        kwargs[p.name] = data.draw(value_for(p.name, hints.get(p.name, str), model), label=p.name)
    LIMITER.reset()  # wrong passwords and tokens are expected here; the limiter has its own tests
    try:
        f.fn(**kwargs)
    except gr.Error as err:
        message = str(err.message)
        assert message.strip(), (f.api_name, kwargs)
        assert not SERVER_INTERNALS.search(message), (f.api_name, kwargs, message)


FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                derandomize=True)
SLOW = settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                derandomize=True)


def fuzz(name: str, f, model: bool) -> None:
    """Run hypothesis over one endpoint; a failure names the endpoint."""

    @(SLOW if model else FAST)
    @given(st.data())
    def run(data):
        call_drawn(f, data, model=model)

    try:
        run()
    except Exception as exc:
        raise AssertionError(f"endpoint {name}: {exc}") from exc




@pytest.mark.timeout(900)
def test_fast_endpoints_answer_or_explain(endpoints):
    fast = sorted(n for n, f in endpoints.items() if not str(f.concurrency_id or "").startswith("model-"))
    assert len(fast) >= 25, fast
    for name in fast:
        fuzz(name, endpoints[name], model=False)


@pytest.mark.timeout(900)
def test_model_endpoints_answer_or_explain(endpoints):
    model = sorted(n for n, f in endpoints.items() if str(f.concurrency_id or "").startswith("model-"))
    assert len(model) >= 5, model
    for name in model:
        fuzz(name, endpoints[name], model=True)
