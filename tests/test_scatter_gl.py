"""The GL map's Python side (app/components/scatter_gl.py): its files, its value, and the Atlas's choice of map."""
import json

import numpy as np
import pandas as pd
import pytest

from app.components import scatter_gl
from app.components.scatter_gl import (
    MapFiles,
    encode_indices,
    indices_from_event,
    normalise,
    scatter_gl_patch,
    scatter_gl_payload,
)


def test_indices_round_trip_as_a_list_or_a_bitmask():
    n = 10_000
    small = [3, 17, 9_999]
    assert encode_indices(small, n) == small
    assert indices_from_event({"indices": small}) == small
    big = np.random.default_rng(0).choice(n, 4_000, replace=False)
    enc = encode_indices(big, n)
    assert set(enc) == {"mask", "count"} and enc["count"] == 4_000
    assert len(enc["mask"]) <= (n // 8) * 4 // 3 + 4  # n/8 bytes in base64, whatever the selection's size
    assert indices_from_event({**enc, "n": n}) == sorted(big.tolist())
    assert indices_from_event(None) == [] and indices_from_event({"indices": []}) == []


def test_points_file_is_float32_x_y_then_uint16_codes_and_written_once(tmp_path):
    files = MapFiles(tmp_path / "maps")
    xy = np.array([[0, 0], [10, 5], [5, 2.5]], np.float32)
    value = json.loads(scatter_gl_payload(xy, files=files, color=["a", "b", "a"], color_name="c",
                                         hover=["p0", "p1", "p2"], uirevision="r"))
    path = tmp_path / "maps" / value["points"].rsplit("/", 1)[1]
    raw = path.read_bytes()
    assert len(raw) == value["bytes"] == 3 * 10
    x, y = np.frombuffer(raw[:12], "<f4"), np.frombuffer(raw[12:24], "<f4")
    assert np.allclose(x, [-0.95, 0.95, 0]) and np.allclose(y, [-0.475, 0.475, 0])  # one scale: the shape kept
    assert np.frombuffer(raw[24:], "<u2").tolist() == [0, 1, 0]
    assert value["categories"] == ["a", "b"] and value["color"] == "cat" and len(value["colors"]) == 2
    tips = tmp_path / "maps" / value["tips"].split("/maps/")[1].replace("{c}", "0")
    assert json.loads(tips.read_text()) == ["p0", "p1", "p2"]
    mtime = path.stat().st_mtime_ns
    again = json.loads(scatter_gl_payload(xy, files=files, color=["a", "b", "a"], hover=["p0", "p1", "p2"]))
    assert again["points"] == value["points"] and path.stat().st_mtime_ns >= mtime
    assert len(list((tmp_path / "maps").glob("*.bin"))) == 1


def test_numbers_get_a_ramp_and_the_value_stays_small_at_a_million_points(tmp_path):
    n = 1_000_000
    rng = np.random.default_rng(1)
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    calls = []

    def hover():
        calls.append(1)
        return [f"i{i}" for i in range(n)]

    files = MapFiles(tmp_path)
    raw = scatter_gl_payload(xy, files=files, color=rng.random(n), color_name="score", hover=hover, tips_key="k",
                             selected=np.arange(0, n, 2), highlight=[1, 2])
    value = json.loads(raw)
    assert value["color"] == "num" and len(value["colors"]) == scatter_gl.RAMP_STEPS and value["range"][0] >= 0
    assert value["bytes"] == 10 * n
    assert value["selected"]["count"] == n // 2
    assert len(raw) < 200_000  # a bitmask of half the points: n/8 bytes in base64; a plain map: a few hundred
    assert len(scatter_gl_payload(xy, files=files, hover=hover, tips_key="k")) < 1_000
    assert calls == [1]  # the tooltips are written once per key
    assert len(list(tmp_path.glob("tips-*/*.json"))) == -(-n // scatter_gl.TIP_CHUNK)


def test_normalise_keeps_the_map_inside_the_margin_and_ignores_non_finite_rows():
    xy = np.array([[1, 1], [3, 2], [np.nan, 5], [2, 1.5]])
    out = normalise(xy)
    assert out.dtype == np.float32 and np.abs(out).max() <= 0.95 + 1e-6 and out[2].tolist() == [0, 0]


def test_old_map_files_go_first_past_the_size_limit(tmp_path):
    files = MapFiles(tmp_path, max_bytes=25)
    urls = [files.points(np.full((1, 2), i, np.float32))[0] for i in range(5)]  # 8 bytes each
    left = sorted(p.name for p in tmp_path.glob("*.bin"))
    assert len(left) == 3 and urls[-1].rsplit("/", 1)[1] in left


def test_patch_carries_only_highlight_and_selection():
    p = json.loads(scatter_gl_patch("rev", 100, highlight=[1, 2], selected=[5]))
    assert p == {"patch": True, "uirevision": "rev", "highlight": [1, 2], "selected": [5]}


@pytest.fixture
def atlas(tmp_path):
    from app.services.atlas import AtlasService
    from backends.corpora.corpus import Corpus
    from backends.registry import Backends
    from backends.settings import Settings

    rng = np.random.default_rng(0)
    corpus = Corpus("toy", rng.normal(size=(300, 8)).astype(np.float32),
                    pd.DataFrame({"colour": rng.choice(["red", "blue"], 300)}))
    b = Backends(Settings.from_env(cache_dir=str(tmp_path)))
    svc = AtlasService(b)
    key = b.add_corpus(corpus)
    return svc, svc.project(key, "pca", 15, 0.1, "cosine")


def test_the_atlas_uses_plotly_up_to_the_threshold_and_regl_above(atlas, monkeypatch):
    svc, view = atlas
    assert scatter_gl.GL_THRESHOLD == 100_000
    plotly = json.loads(svc.payload(view, "colour"))
    assert "gl" not in plotly and len(plotly["x"]) == 300
    monkeypatch.setattr(scatter_gl, "GL_THRESHOLD", 299)
    gl = json.loads(svc.payload({**view, "selected": [4, 5], "highlight": [7]}, "colour"))
    assert gl["gl"] == 1 and gl["n"] == 300 and gl["categories"] == ["blue", "red"] and gl["selected"] == [4, 5]
    assert (svc.maps.root / gl["points"].rsplit("/", 1)[1]).stat().st_size == 300 * 10
    patch = json.loads(svc.patch({**view, "selected": list(range(200))}, "colour"))
    assert patch["patch"] and patch["selected"]["count"] == 200  # a bitmask: more than n/32 indices
    assert patch["uirevision"] == gl["uirevision"]


def test_the_clusters_map_switches_to_regl_above_the_threshold_too(atlas, monkeypatch):
    from app.services.clusters import ClustersService

    svc, view = atlas
    clusters = ClustersService(svc.b)
    labels = np.arange(300) % 4 - 1  # -1: noise
    assert "gl" not in json.loads(clusters.map_payload(view["corpus"], labels, "cluster", "t"))
    monkeypatch.setattr(scatter_gl, "GL_THRESHOLD", 299)
    gl = json.loads(clusters.map_payload(view["corpus"], labels, "cluster", "t"))
    assert gl["gl"] == 1 and gl["categories"] == ["0", "1", "2", "noise"] and gl["n"] == 300


def test_the_stitching_maps_switch_to_regl_above_the_threshold_too(tmp_path, monkeypatch):
    """A `corpus:` space can be as large as any Atlas corpus: both linked maps then go as GL maps,
    with the linked selection and highlight."""
    from app.services.stitching import StitchingService
    from backends.registry import Backends
    from backends.settings import Settings

    svc = StitchingService(Backends(Settings.from_env(cache_dir=str(tmp_path))))
    p = svc.params("blobs", "blobs-rotated", n_anchors=30)
    svc.compare(p)
    a, b = (json.loads(v) for v in svc.payloads(p, "relative", "pca", None))
    n = len(a["x"])
    assert "gl" not in a and "gl" not in b
    monkeypatch.setattr(scatter_gl, "GL_THRESHOLD", n - 1)
    a, b = (json.loads(v) for v in svc.payloads(p, "relative", "pca", None, selected=[3, 4], highlight=[9]))
    assert a["gl"] == b["gl"] == 1 and a["n"] == b["n"] == n
    assert a["selected"] == b["selected"] == [3, 4] and a["highlight"] == b["highlight"] == [9]
    assert a["title"].startswith("A: ") and b["title"].startswith("B: ") and a["points"] != b["points"]
