"""AtlasService without the UI: what each Atlas action returns for a small synthetic corpus."""
import numpy as np
import pandas as pd
import pytest

from app.services.atlas import AtlasService
from backends.corpora.corpus import Corpus
from backends.errors import InputError
from backends.registry import Backends
from backends.settings import Settings

WORDS = {"red": 0, "blue": 1, "green": 2}


@pytest.fixture
def svc_key(tmp_path):
    rng = np.random.default_rng(0)
    centers = np.eye(3, 16) * 8
    labels = np.repeat(["red", "blue", "green"], 30)
    v = centers[[WORDS[w] for w in labels]] + rng.normal(size=(90, 16))

    def text_query(text):  # a toy aligned text encoder: the colour word's centre
        words = [w for w in WORDS if w in text.lower()]
        if not words:
            raise InputError(f"no known colour in {text!r}")
        return centers[WORDS[words[0]]].astype(np.float32)

    corpus = Corpus("toy", v, pd.DataFrame({"colour": labels}), texts=[f"a {c} thing" for c in labels],
                    text_query=text_query)
    b = Backends(Settings.from_env(cache_dir=str(tmp_path)))
    return AtlasService(b), b.add_corpus(corpus)


def test_text_search_finds_items_of_the_named_colour(svc_key):
    svc, key = svc_key
    hits = svc.text_search(key, "something blue", 20)
    assert len(hits) == 20
    assert all(30 <= i < 60 for i, _ in hits)
    assert [d for _, d in hits] == sorted(d for _, d in hits)


def test_text_search_without_a_text_encoder_says_so(tmp_path):
    b = Backends(Settings.from_env(cache_dir=str(tmp_path)))
    key = b.add_corpus(Corpus("plain", np.random.default_rng(0).normal(size=(10, 4)), pd.DataFrame(index=range(10))))
    with pytest.raises(InputError, match="no aligned text encoder"):
        AtlasService(b).text_search(key, "red", 5)


def test_project_neighbours_selection_rows_and_export(svc_key, tmp_path):
    svc, key = svc_key
    view = svc.project(key, "pca", 15, 0.1, "cosine")
    rows = svc.neighbours(key, "0", 5)
    assert [r["colour"] for r in rows] == ["red"] * 5
    df = svc.rows(view, [0, 45])
    assert df["colour"].tolist() == ["red", "blue"] and {"x", "y"} <= set(df.columns)
    path = svc.export(view, [0, 45], "jsonl")
    assert pd.read_json(path, lines=True)["id"].astype(str).tolist() == ["0", "45"]
    with pytest.raises(InputError, match="nothing is selected"):
        svc.export(view, [], "csv")
    payload = svc.payload({**view, "highlight": [1, 2]}, "colour")
    assert '"highlight":[1,2]' in payload and '"categories":["blue","green","red"]' in payload


def test_shapes_corpus_text_search_finds_the_named_colour(tmp_path):
    from backends.shapes.encoders import available_encoders, load_image_encoder

    try:
        load_image_encoder(available_encoders()[0])
    except FileNotFoundError:
        pytest.skip("no Shapes encoder weights in assets/ yet")
    b = Backends(Settings.from_env(cache_dir=str(tmp_path)))
    key = b.add_corpus(__import__("backends.shapes.corpus", fromlist=["x"]).load_shapes_corpus(n=300, single=True))
    hits = AtlasService(b).text_search(key, "a red shape", 10)
    colours = b.corpus(key).meta["colour"].to_numpy()[[i for i, _ in hits]]
    assert (colours == "red").mean() >= 0.9, colours
