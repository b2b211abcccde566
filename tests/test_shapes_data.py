"""The procedural Shapes data: determinism, splits, masks, captions, factors."""
from __future__ import annotations

import numpy as np
import pytest

from backends.shapes import scenes
from backends.shapes.scenes import ObjectSpec, SceneSpec


def test_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, backends.shapes, backends.shapes.scenes, backends.shapes.corpus, backends.shapes.judge, backends.shapes.encoders; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_vocabulary():
    assert len(scenes.SHAPES) >= 5 and len(scenes.COLOURS) >= 8 and len(scenes.POSITIONS) == 9
    assert scenes.SIZES == ("small", "medium", "large")
    cols = np.asarray(list(scenes.COLOURS.values()), float)
    d = np.linalg.norm(cols[:, None] - cols[None], axis=-1) + 1e3 * np.eye(len(cols))
    assert d.min() > 60  # well separated colours
    bgs = np.asarray(list(scenes.BACKGROUNDS.values()), float)
    assert np.linalg.norm(cols[:, None] - bgs[None], axis=-1).min() > 60


def test_deterministic_and_prefix_stable():
    a = scenes.make_batch(20, seed=3, size=32)
    b = scenes.make_batch(20, seed=3, size=32)
    c = scenes.make_batch(7, seed=3, size=32)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert np.array_equal(a.images[:7], c.images) and a.captions[:7] == c.captions
    assert a.specs == b.specs
    d = scenes.make_batch(20, seed=4, size=32)
    assert not np.array_equal(a.images, d.images)


def test_splits_are_disjoint():
    def keys(split, seed):
        return {(round(o.x, 9), round(o.y, 9), o.shape, o.colour) for sp in scenes.make_batch(300, seed=seed, split=split, size=16).specs for o in sp.objects}

    train = keys("train", 0) | keys("train", 1)
    for split in ("val", "test"):
        for seed in (0, 1):
            assert not (keys(split, seed) & train)
    with pytest.raises(ValueError, match="split"):
        scenes.make_batch(2, seed=0, split="dev")


def test_masks_match_pixels():
    from scipy.ndimage import binary_dilation, binary_erosion

    b = scenes.make_batch(60, seed=5, split="test", size=64)
    for img, masks, spec in zip(b.images, b.masks, b.specs):
        assert masks.shape == (len(spec.objects), 64, 64) and masks.dtype == bool
        assert masks.sum(0).max() <= 1  # visible pixels belong to one object
        bg = np.asarray(scenes.BACKGROUNDS[spec.background])
        for m, o in zip(masks, spec.objects):
            core = binary_erosion(m, structure=np.ones((3, 3), bool))
            if core.any():
                assert np.abs(img[core].astype(int) - scenes.COLOURS[o.colour]).max() <= 1
        if len(spec.objects) == 1:  # outside the mask, pixels are mostly background (coverage < 1/2) ...
            contrast = np.abs(np.asarray(scenes.COLOURS[spec.objects[0].colour]) - bg).max()
            assert np.abs(img[~masks[0]].astype(int) - bg).max() <= 0.5 * contrast + 1
        # ... and exactly background a few pixels away from them
        outside = ~binary_dilation(masks.any(0), iterations=4)
        assert np.abs(img[outside].astype(int) - bg).max() <= 1
        assert masks[-1].sum() > 0  # the top object is always visible


def test_single_object_and_render_validation():
    b = scenes.make_batch(30, seed=0, size=32, single=True)
    assert (b.factors["n_objects"] == 1).all() and all(len(m) == 1 for m in b.masks)
    b3 = scenes.make_batch(10, seed=0, size=32, n_objects=3)
    assert (b3.factors["n_objects"] == 3).all()
    spec = SceneSpec([ObjectSpec("blob", "red", "small", 0.5, 0.5)], "black")
    with pytest.raises(ValueError, match="shape"):
        scenes.render(spec)
    with pytest.raises(ValueError, match="colour"):
        scenes.render(SceneSpec([ObjectSpec("star", "mauve", "small", 0.5, 0.5)], "black"))


def test_captions_are_varied_and_faithful():
    spec = SceneSpec([ObjectSpec("circle", "red", "small", 0.2, 0.2, 0.0)], "grey")
    rng = np.random.default_rng(0)
    caps = [scenes.caption(spec, rng) for _ in range(300)]
    assert len(set(caps)) >= 60
    assert all(any(w in c for w in scenes.COLOUR_WORDS["red"]) for c in caps)
    assert all(any(w in c for w in scenes.SHAPE_WORDS["circle"]) for c in caps)
    assert any("crimson" in c or "scarlet" in c for c in caps) and any("disc" in c for c in caps)
    assert scenes.canonical_caption(spec) == "a small red circle in the top left on a grey background"
    two = SceneSpec([ObjectSpec("star", "blue", "large", 0.5, 0.5, 10.0), ObjectSpec("cross", "orange", "medium", 0.8, 0.8, 0.0)], "black")
    assert scenes.canonical_caption(two) == "a large blue star in the center and a medium orange cross in the bottom right on a black background"
    caps2 = {scenes.caption(two, rng) for _ in range(100)}
    assert len(caps2) >= 30 and any(c.startswith("two ") for c in caps2)


def test_factors_table_consistent():
    b = scenes.make_batch(50, seed=9, split="val", size=32)
    f = b.factors
    assert list(f.columns) == ["shape", "colour", "size", "position", "x", "y", "rotation", "background", "n_objects"]
    assert len(f) == 50
    for row, sp in zip(f.itertuples(), b.specs):
        o = sp.objects[0]
        assert (row.shape, row.colour, row.size, row.x, row.y, row.background, row.n_objects) == (o.shape, o.colour, o.size, o.x, o.y, sp.background, len(sp.objects))
        assert row.position == o.position
        cx, cy = scenes.position_centre(row.position)
        assert abs(cx - o.x) <= 0.06 and abs(cy - o.y) <= 0.06
    assert 1 <= f["n_objects"].min() and f["n_objects"].max() <= 3


def test_minilm_folder_can_be_overridden(tmp_path, monkeypatch):
    """A machine without the PyPI package (a GPU lease) points LATENT_ATLAS_MINILM_DIR at a copy."""
    import pytest

    from backends.shapes import text

    default = text.model_dir()
    monkeypatch.setenv("LATENT_ATLAS_MINILM_DIR", default)
    assert text.model_dir() == default
    monkeypatch.setenv("LATENT_ATLAS_MINILM_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no MiniLM"):
        text.model_dir()
