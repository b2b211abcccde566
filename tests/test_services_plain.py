"""app/services/: what each tab does, in plain Python. Importing a service never imports gradio,
and each service works when called directly, on a real Backends with a temporary cache."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SERVICES = sorted(m.name for m in pkgutil.iter_modules([str(REPO / "app" / "services")]))


def test_there_are_services():
    assert {"directions", "atlas"} <= set(SERVICES)


@pytest.mark.parametrize("name", SERVICES)
def test_importing_a_service_does_not_import_gradio(name):
    code = f"import sys, app.services.{name}; assert 'gradio' not in sys.modules, 'gradio was imported'"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.fixture
def backends(tmp_path):
    from backends.registry import Backends
    from backends.settings import Settings

    return Backends(Settings.from_env(cache_dir=str(tmp_path / "cache")))


# -- Directions ---------------------------------------------------------------------------

@pytest.fixture
def directions(backends):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from app.services.directions import DirectionsService
    from test_hspace import tiny_pipe

    backends.directions_bank_size = 8
    return DirectionsService(backends, pipe=tiny_pipe(), judge=False)


def test_pca_discovery_shows_a_percentage_from_the_start(directions):
    """A cold Discover loads the model, then samples the bank: 0% shows at once, not after the first batch."""
    seen = []
    # 9 samples: a bank no other test samples (banks are kept in memory per process)
    directions.discover_pca(n_samples=9, k=2, progress=lambda f, text: seen.append((f, text)))
    assert seen[:2] == [(0.0, "loading the generator"), (0.0, "sampling h: 0/9")]
    assert seen[-1][0] == pytest.approx(1.0) and [f for f, _ in seen] == sorted(f for f, _ in seen)


def test_judging_and_supervised_directions_show_a_percentage(directions):
    """Judge renders and edits a few dozen images (about 40 s on 2 cores): its stages report progress."""
    from app.services.directions import DirectionsService

    seen = []
    did = directions.supervised("colour", "blue", progress=lambda f, text: seen.append((f, text)))
    assert seen and seen[0] == (0.0, "loading the generator")

    class Reader:  # a stand-in judge: reads each image's brightest channel as its colour
        def predict(self, images):
            import pandas as pd

            names = np.array(["red", "green", "blue"])[np.asarray(images).reshape(len(images), -1, 3).mean(1).argmax(1)]
            return pd.DataFrame({"shape": "circle", "colour": names, "size": "small", "position": "center"})

    judged = DirectionsService(directions.b, pipe=directions.pipe, judge=Reader())
    judged.add(directions.get(did))
    said = []
    judged.judge_direction(did, 2, progress=lambda f, text: said.append((f, text)))
    fractions = [f for f, _ in said]
    assert said[0] == (0.0, "rendering 2 sources") and said[-1] == (1.0, "judged")
    assert fractions == sorted(fractions) and any("traversal" in t for _, t in said)


def test_directions_layers_sources_and_the_library(directions):
    from app.services.directions import LIBRARY_COLUMNS

    assert directions.layers() == ["mid_block", "up_blocks.0", "up_blocks.1"]
    assert directions.library_table().columns.tolist() == list(LIBRARY_COLUMNS)
    assert len(directions.library_table()) == 0
    key, d = directions.source_from_prompt("a red circle", seed=1, steps=3)
    assert d["source"] == key and d["kind"] == "generated" and d["steps"] == 3
    base = directions.source(key).images[0]
    assert base.dtype == np.uint8 and base.shape == (64, 64, 3)
    did = directions.prompt_pair("a red circle", "a blue circle", n=2)
    text = directions.text("a red circle", "a blue circle")
    table = directions.library_table()
    assert table["id"].tolist() == [did, text]
    assert table["kind"].tolist() == ["prompt-pair", "text"]
    assert table["default_strength"].tolist()[1] == "1.0 (× text shift)"  # not σ: the header says "strength (σ)"
    assert table["disentanglement"].tolist() == ["", ""]  # not judged
    np.testing.assert_array_equal(directions.edit(key, [did], [0.0]), base)  # strength 0: the source itself
    assert np.abs(directions.edit(key, [did], [3.0]).astype(int) - base).mean() > 0.5
    # an h-space direction's slider spans ±10σ; a text shift's ±2 (1 is the whole shift; ±10 wrecks the image)
    assert directions.slider(did) == {"range": 10.0, "step": 0.1, "label": "strength (σ)"}
    assert directions.slider(text)["range"] == 2.0 and "text shift" in directions.slider(text)["label"]
    assert directions.slider(None)["range"] == 10.0


def test_directions_errors_are_input_errors(directions):
    from backends.errors import InputError

    with pytest.raises(InputError, match="prompt is empty"):
        directions.source_from_prompt("  ")
    with pytest.raises(InputError, match="Unknown direction: 'nope'"):
        directions.get("nope")
    with pytest.raises(InputError, match="unknown source"):
        directions.edit("src-missing", [], [])
    with pytest.raises(InputError, match="there is no judge"):
        directions.judge_direction("nope")


def test_parse_sample_ids():
    from app.services.directions import parse_sample_ids
    from backends.errors import InputError

    assert parse_sample_ids("h-3, h-17; 5", "group A") == [3, 17, 5]
    with pytest.raises(InputError, match="group A is empty"):
        parse_sample_ids(" , ", "group A")
    with pytest.raises(InputError, match="'x-1' is not a sample id"):
        parse_sample_ids("h-1, x-1", "group B")


# -- Atlas --------------------------------------------------------------------------------

def test_atlas_project_search_click_and_export_digits(backends, tmp_path):
    import pandas as pd

    from app.services.atlas import AtlasService

    svc = AtlasService(backends)
    view = svc.project("digits", "pca", 15, 0.1, "cosine", progress=lambda f, text: None)
    assert view["corpus"] == "digits" and view["label"] == "PCA"
    m = svc.coordinates(view)
    assert len(m["ids"]) == len(m["x"]) == len(m["y"]) == 1797
    assert svc.default_color("digits") == "label" and svc.color_columns("digits")[:2] == ["(none)", "label"]
    assert svc.corpus_info("digits").startswith("**")
    hits = svc.search("digits", "label=3")
    labels = backends.corpus("digits").meta["label"]
    assert len(hits) == (labels.astype(str) == "3").sum() > 100
    assert set(labels.iloc[hits].astype(str)) == {"3"}
    rows = svc.rows(view, hits[:5])
    assert isinstance(rows, pd.DataFrame) and len(rows) == 5 and {"id", "x", "y"} <= set(rows.columns)
    d = svc.item_details("digits", hits[0], k=5)
    assert d["meta"]["label"] == 3 and len(d["neighbours"]) == 5
    assert sum(r["label"] == 3 for r in d["neighbours"]) >= 4  # digits: neighbours share the label
    path = svc.export(view, hits[:5], "csv")
    assert pd.read_csv(path)["id"].tolist() == rows["id"].tolist()


def test_atlas_errors_are_input_errors(backends):
    from app.services.atlas import AtlasService
    from backends.errors import InputError

    svc = AtlasService(backends)
    with pytest.raises(InputError, match="no item with id"):
        svc.neighbours("digits", "nope")
    with pytest.raises(InputError, match="k must be between 1 and 200"):
        svc.neighbours("digits", "digit-0000", k=0)
    with pytest.raises(InputError, match="nothing is selected"):
        svc.export({"corpus": "digits"}, [], "csv")


# -- Generate -----------------------------------------------------------------------------

def test_generate_clamps_and_names_its_methods(backends):
    from app.services.generate import GenerateService
    from backends.errors import InputError

    svc = GenerateService(backends)
    assert svc.method_choices()[0] in ("autoguidance", "classifier-free")
    assert svc.method("") is None and svc.method("classifier-free") == "cfg"
    with pytest.raises(InputError, match="guidance method must be one of"):
        svc.method("sideways")
    assert svc.clamp("steps", 500, 1, 100, int) == (100, "steps 500 is outside 1..100; used 100")
    with pytest.raises(InputError, match="prompt is empty"):
        svc.generate("  ")
    try:
        svc.pipeline()
    except InputError:
        pytest.skip("no generator weights here")
    img, notes = svc.generate("a red circle", seed=1, steps=0, guidance=3.0)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3
    assert notes[0] == "steps 0 is outside 1..100; used 1"


def test_generate_reports_its_progress_from_loading_to_the_last_step(backends):
    """The first image takes seconds (the model loads, then 20 steps): the page shows a percentage
    from the start, rising with every step to 100%."""
    from app.services.generate import GenerateService
    from backends.errors import InputError

    svc = GenerateService(backends)
    try:
        svc.pipeline()
    except InputError:
        pytest.skip("no generator weights here")
    seen = []
    svc.generate("a blue star", seed=3, steps=5, progress=lambda f, text: seen.append((f, text)))
    fractions = [f for f, _ in seen]
    assert seen[0] == (0.0, "loading the generator")
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert [t for _, t in seen][-5:] == [f"denoising step {i}/5" for i in range(1, 6)]


# -- Regions ------------------------------------------------------------------------------

def test_regions_parse_and_generate_the_example_layout(backends):
    from app.services.regions import EXAMPLE, RegionsService, decode_data_url, encode_data_url, example_canvas
    from backends.errors import InputError

    svc = RegionsService(backends)
    canvas = example_canvas()
    np.testing.assert_array_equal(decode_data_url(encode_data_url(canvas)), canvas)
    summary = svc.summary(svc.parse(canvas))
    assert [r["colour"] for r in summary["regions"]] == ["red", "blue"]
    assert all(0.05 < r["area"] < 0.3 for r in summary["regions"])
    with pytest.raises(InputError, match="nothing was painted"):
        svc.parse(None)
    with pytest.raises(InputError, match="steps must be between 1 and 100"):
        svc.generate(canvas, {}, steps=0)
    prompts = {colour: prompt for colour, _, prompt in EXAMPLE["regions"]}
    try:
        res, parsed = svc.generate(canvas, prompts, EXAMPLE["prompt"], method="spatext", seed=0, steps=2)
    except (InputError, FileNotFoundError):
        pytest.skip("no generator weights here")
    img = res.images["spatext"]
    assert img.dtype == np.uint8 and img.ndim == 3 and parsed.present == ["red", "blue"]


# -- Stitching ----------------------------------------------------------------------------

def test_stitching_a_rotated_space_is_the_same_in_relative_terms(backends):
    from app.services.stitching import METRICS_COLUMNS, StitchingService, metrics_frame
    from backends.errors import InputError

    svc = StitchingService(backends)
    p = svc.params("blobs", "blobs-rotated", n_anchors=30)
    out = svc.compare(p)
    assert out["n_anchors"] == 30 and len(out["anchor_ids"]) == 30
    assert out["relative"]["mrr"] > 0.95 > 0.1 > out["absolute"]["mrr"]  # a rotation: relative vectors agree
    frame = metrics_frame(out)
    assert list(frame.columns) == list(METRICS_COLUMNS) and len(frame) == 5
    with pytest.raises(InputError, match="Unknown anchor strategy"):
        svc.params("blobs", "blobs-rotated", strategy="sideways")


# -- Clusters -----------------------------------------------------------------------------

def test_estimating_k_and_propagating_labels_report_progress(backends):
    """Both can take seconds (a UMAP reduction, a k sweep): the page shows a percentage while they run."""
    from app.services.clusters import ClustersService

    svc = ClustersService(backends)
    seen = []
    curve = svc.estimate_k("digits", 2, 4, progress=lambda f, text: seen.append(f))
    assert curve["best"] in (2, 3, 4) and seen and seen[-1] == pytest.approx(1.0)
    labels = svc.sample_labels("digits", "label", 2)
    said = []
    out = svc.propagate("digits", labels, "spreading", "pca", "label", progress=lambda f, text: said.append((f, text)))
    assert out["accuracy"] > 0.5
    assert said[0][0] == 0.0 and said[-1] == (1.0, "done") and [f for f, _ in said] == sorted(f for f, _ in said)


def test_clusters_of_digits_follow_the_labels(backends):
    from app.services.clusters import CLUSTER_COLUMNS, ClustersService, cluster_table
    from backends.errors import InputError

    svc = ClustersService(backends)
    seen = []
    run_id, res = svc.run("digits", "kmeans", k=10, seed=0, progress=lambda f, text: seen.append(f))
    assert res.k == 10 and len(res.labels) == 1797
    s = svc.summary(run_id)
    assert s["metrics"]["label"]["nmi"] > 0.5  # property, not an exact number
    rows = svc.names(run_id)
    table = cluster_table(rows)
    assert list(table.columns) == list(CLUSTER_COLUMNS) and len(table) == 10 and table["size"].sum() == 1797
    assert len(svc.members(run_id, 0, 5)) == 5
    with pytest.raises(InputError):
        svc.summary("no-such-run")
