"""Uploads are first-class corpora: named after their file, kept across restarts, removable."""
import numpy as np
import pandas as pd
import pytest

from backends.errors import InputError
from backends.registry import Backends
from backends.settings import Settings


def _wine(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(178, 13)), columns=[f"f{i}" for i in range(13)])
    df["cultivar"] = [f"c{i}" for i in rng.integers(1, 4, 178)]
    path = tmp_path / "wine.csv"
    df.to_csv(path, index=False)
    return path


def test_an_upload_is_named_after_its_file_and_survives_a_restart(tmp_path):
    cache = tmp_path / "cache"
    b = Backends(Settings.from_env(cache_dir=str(cache)))
    key = b.add_path(str(_wine(tmp_path)))
    assert b.corpus_label(key) == "wine.csv · 178 × 13"
    assert (b.corpus_label(key), key) == b.corpus_choices()[0]
    vec = b.corpus(key).vectors.copy()

    restarted = Backends(Settings.from_env(cache_dir=str(cache)))  # a new server process on the same cache
    assert restarted.user_corpus_keys() == [key]
    assert restarted.corpus_choices()[0] == ("wine.csv · 178 × 13", key)
    c = restarted.corpus(key)
    np.testing.assert_array_equal(c.vectors, vec)
    assert "cultivar" in c.metadata_columns()
    assert restarted.neighbours(key, 0, k=3)[1].shape == (3,)


def test_an_upload_can_be_removed_and_bundled_corpora_cannot(tmp_path):
    cache = tmp_path / "cache"
    b = Backends(Settings.from_env(cache_dir=str(cache)))
    key = b.add_path(str(_wine(tmp_path)))
    b.remove_upload(key)
    assert key not in b.user_corpus_keys()
    assert Backends(Settings.from_env(cache_dir=str(cache))).user_corpus_keys() == []
    with pytest.raises(InputError, match="bundled"):
        b.remove_upload("digits")
    with pytest.raises(InputError, match="no uploaded corpus"):
        b.remove_upload(key)
    with pytest.raises(InputError, match="not stored"):
        b.corpus(key)


def test_a_half_written_upload_folder_is_ignored(tmp_path):
    cache = tmp_path / "cache"
    b = Backends(Settings.from_env(cache_dir=str(cache)))
    (cache / "uploads" / ".tmp-abc-1").mkdir(parents=True)
    (cache / "uploads" / "deadbeef").mkdir()
    (cache / "uploads" / "deadbeef" / "info.json").write_text("{not json")
    assert b.user_corpus_keys() == []
