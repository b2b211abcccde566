"""The Shapes world's models: text encoder, judge, contrastive encoders, trainers, corpus.

The accuracy bars here are relaxed versions of the targets (measured on small held-out samples
so the file runs in well under a minute); `python -m backends.shapes.eval all` prints the full
numbers.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from backends.shapes import scenes  # noqa: E402


# --------------------------------------------------------------------------------- text
def test_text_encoder_shapes_and_bad_input():
    from backends.shapes.text import get_text_encoder

    enc = get_text_encoder()
    assert get_text_encoder() is enc
    texts = ["a red circle", "", "x " * 5000, "ein rotes Quadrat, 日本語 \x00\x07 ☃", "a red circle"]
    states, mask = enc.encode_tokens(texts, max_len=16)
    assert states.shape == (5, 16, 384) and states.dtype == torch.float32
    assert mask.shape == (5, 16) and mask.dtype == torch.bool
    assert mask[1].sum() == 2  # [CLS] [SEP] for the empty string
    assert mask[2].all()  # long text truncated to max_len
    assert torch.equal(states[0], states[4]) and torch.isfinite(states).all()
    assert (states[0][~mask[0]] == 0).all()
    pooled = enc.encode_pooled(texts)
    assert pooled.shape == (5, 384) and pooled.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)
    # free wording lands near the plain words
    v = enc.encode_pooled(["a red circle", "a crimson disc", "a blue square"])
    assert v[0] @ v[1] > v[1] @ v[2]
    with pytest.raises(ValueError, match="max_len"):
        enc.encode_tokens(["a"], max_len=1)


# -------------------------------------------------------------------------------- judge
def test_judge_accuracy_on_held_out_images():
    from backends.shapes.judge import load_judge

    judge = load_judge()
    for size in (32, 64):
        b = scenes.make_batch(200, seed=123, split="test", size=size, single=True)
        pred = judge.predict(b.images)
        for k, bar in (("shape", 0.97), ("colour", 0.98), ("size", 0.9), ("position", 0.97)):
            acc = (pred[k].values == b.factors[k].values).mean()
            assert acc >= bar, f"{size}px {k}: {acc:.3f}"
    assert {"shape_conf", "colour_conf"} <= set(pred.columns)


def test_judge_predict_objects_on_multi_object_scenes():
    from backends.shapes.judge import load_judge

    judge = load_judge()
    b = scenes.make_batch(40, seed=7, split="test", size=64, n_objects=3)
    hits = []
    for img, masks, spec in zip(b.images, b.masks, b.specs):
        pred = judge.predict_objects(img, masks)
        assert len(pred) == len(spec.objects)
        for row, o, m in zip(pred.itertuples(), spec.objects, masks):
            if m.sum() > 0:
                hits.append((row.shape == o.shape, row.colour == o.colour, row.position == o.position))
    acc = np.mean(hits, axis=0)
    assert acc[0] >= 0.9 and acc[1] >= 0.95 and acc[2] >= 0.9, acc
    with pytest.raises(ValueError, match="masks"):
        judge.predict_objects(b.images[0], np.zeros((1, 10, 10), bool))


# ----------------------------------------------------------------------------- encoders
@pytest.mark.parametrize("name", ["shapes-cnn", "shapes-vit"])
def test_encoder_zero_shot_and_retrieval(name):
    from backends.shapes.encoders import load_image_encoder
    from backends.shapes.eval import COLOUR_TEMPLATES, SHAPE_TEMPLATES, _zero_shot

    enc = load_image_encoder(name)
    b = scenes.make_batch(200, seed=321, split="test", size=64, single=True)
    v = enc.encode_images(b.images)
    assert v.shape == (200, enc.dim) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert _zero_shot(enc, b.images, b.factors["shape"], scenes.SHAPES, SHAPE_TEMPLATES) >= 0.8
    assert _zero_shot(enc, b.images, b.factors["colour"], tuple(scenes.COLOURS), COLOUR_TEMPLATES) >= 0.8
    # text -> image: "a blue star" retrieves blue stars
    q = enc.encode_texts(["a blue star", "a yellow circle"])
    top = np.argsort(-(q @ v.T), axis=1)[:, :3]
    lab = list(zip(b.factors["shape"], b.factors["colour"]))
    assert np.mean([lab[i] == ("star", "blue") for i in top[0]] + [lab[i] == ("circle", "yellow") for i in top[1]]) >= 0.8
    assert enc.encode_texts([]).shape == (0, enc.dim)


def test_unknown_encoder_lists_names():
    from backends.shapes.encoders import load_image_encoder

    with pytest.raises(ValueError, match="shapes-cnn"):
        load_image_encoder("shapes-resnet")


# ------------------------------------------------------------------------------ training
def test_train_judge_runs_and_resumes(tmp_path):
    from backends.shapes.judge import load_judge
    from backends.shapes.train import main

    args = ["--out", str(tmp_path), "--batch", "8", "--eval-every", "2", "--ckpt-every", "1", "--eval-n", "16", "--no-progress"]
    assert main(["judge", "--steps", "2", *args]) == 0
    assert main(["judge", "--steps", "3", "--resume", *args]) == 0
    log = [json.loads(line) for line in (tmp_path / "runs" / "judge" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 3] and "scene64_shape" in log[0]
    assert json.loads((tmp_path / "runs" / "judge" / "checkpoint.json").read_text())["step"] == 3
    j = load_judge(tmp_path / "judge.safetensors")
    assert len(j.predict(scenes.make_batch(2, seed=0, size=32).images)) == 2


def test_train_encoders_runs(tmp_path):
    from backends.shapes.encoders import load_image_encoder
    from backends.shapes.train import main

    assert main(["encoders", "--steps", "2", "--out", str(tmp_path), "--pool", "48", "--batch", "16",
                 "--eval-every", "2", "--eval-n", "16", "--no-progress"]) == 0
    for name in ("shapes-cnn", "shapes-vit"):
        enc = load_image_encoder(name, tmp_path)
        assert enc.encode_images(scenes.make_batch(3, seed=0, size=32).images).shape == (3, enc.dim)
    assert (tmp_path / "runs" / "encoder_cnn" / "log.jsonl").exists()
    assert main(["nonsense"]) == 2


# -------------------------------------------------------------------------------- corpus
def test_shapes_corpus_and_text_query():
    from backends.corpora.corpus import available_corpora, load_corpus
    from backends.errors import InputError
    from backends.shapes.corpus import text_query_vector

    assert "shapes" in available_corpora()
    c = load_corpus("shapes", n=120)
    assert len(c) == 120 and c.images.shape == (120, 64, 64, 3) and len(c.texts) == 120
    assert {"shape", "colour", "size", "position", "background", "n_objects", "caption"} <= set(c.meta.columns)
    q = text_query_vector("red triangles", "shapes-cnn")
    assert q.shape == (c.dim,)
    # single-object scenes: the top hits are red triangles (multi-object retrieval is weaker; see eval's query_mAP)
    s = load_corpus("shapes", n=200, single=True)
    top = np.argsort(-(s.vectors @ text_query_vector("red triangles", "shapes-cnn")))[:5]
    assert np.mean([s.meta["objects"].values[i] == "red triangle" for i in top]) >= 0.6
    with pytest.raises(InputError, match="n must be"):
        load_corpus("shapes", n=1)
    with pytest.raises(InputError, match="empty"):
        text_query_vector("  ", "shapes-cnn")
    with pytest.raises(InputError, match="Unknown encoder"):
        text_query_vector("red", "nope")
