"""The services behind issue #19 items 10 and 12, in plain Python (the browser side is in
tests/test_ui_consistency_browser.py)."""
from __future__ import annotations

import pytest


@pytest.fixture
def backends(tmp_path):
    from backends.registry import Backends
    from backends.settings import Settings

    return Backends(Settings.from_env(cache_dir=str(tmp_path / "cache")))


# -- 10. Clusters --------------------------------------------------------------------------------

def test_a_run_with_k_given_finds_the_curve_estimated_with_its_settings(backends):
    from app.services.clusters import ClustersService, curve_note

    svc = ClustersService(backends)
    given, _ = svc.run("digits", "kmeans", 6, k_min=2, k_max=8)
    assert svc.curve(given) is None  # nothing estimated yet: the chart says why
    note = curve_note("kmeans", 6, 6, 2, 8, estimated=False)
    assert "k = 6 was given" in note and "2…8" in note
    estimated, res = svc.run("digits", "kmeans", 0, k_min=2, k_max=8)
    assert res.curve["k"] == list(range(2, 9))
    again, _ = svc.run("digits", "kmeans", 6, k_min=2, k_max=8)
    assert svc.curve(again) == res.curve  # the same settings but k: the estimate is shown, with k = 6 marked
    other, _ = svc.run("digits", "kmeans", 6, k_min=2, k_max=9)
    assert svc.curve(other) is None  # another range: not that curve
    assert "HDBSCAN" in curve_note("hdbscan", 0, 4, 2, 8, estimated=False)


def test_propagation_table_counts_given_and_predicted_labels():
    from app.services.clusters import PROPAGATION_COLUMNS, propagation_table

    out = {"predictions": ["a", "a", "b", "a"], "confidence": [1.0, 0.5, 0.8, 0.6], "counts": {"a": 3, "b": 1}}
    t = propagation_table(out, "x1=a\nx2=b\nx3=b")
    assert list(t.columns) == list(PROPAGATION_COLUMNS)
    assert t.to_dict(orient="records") == [
        {"label": "a", "given": 1, "predicted": 3, "mean confidence": 0.7},
        {"label": "b", "given": 2, "predicted": 1, "mean confidence": 0.8}]


# -- 12. Directions -------------------------------------------------------------------------------

def test_the_library_says_run_judge_until_a_direction_is_judged(backends):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from app.services.directions import JUDGE_COLUMNS, JUDGE_PENDING, DirectionsService
    from test_directions import MeanColourJudge
    from test_hspace import tiny_pipe

    backends.directions_bank_size = 8
    svc = DirectionsService(backends, pipe=tiny_pipe(), judge=MeanColourJudge())
    assert len(svc.library_table()) == 0
    pair = svc.prompt_pair("a red circle", "a blue circle", n=2)
    text = svc.text("a red circle", "a blue circle")
    table = svc.library_table().set_index("id")
    for c in JUDGE_COLUMNS:
        assert table.loc[pair, c] == JUDGE_PENDING and table.loc[text, c] == JUDGE_PENDING
    svc.judge_direction(pair, 2)
    svc.judge_direction(text, 1)  # a text direction is judged on one source, with no traversal
    table = svc.library_table().set_index("id")
    assert 0.0 <= float(table.loc[pair, "disentanglement"]) <= 1.0
    assert table.loc[pair, "dominant"] in ("shape", "colour", "size", "position")
    assert float(table.loc[pair, "istd"]) >= 0.0
    assert table.loc[text, "istd"] == "n/a (text direction)" and table.loc[text, "dominant"] != JUDGE_PENDING
    assert svc.list()[0]["disentanglement"] == table.loc[pair, "disentanglement"]  # the API keeps numbers
