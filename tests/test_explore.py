import numpy as np
import pandas as pd
import pytest

from backends.corpora.corpus import Corpus
from backends.corpora.explore import custom_axes, resolve_group, search_metadata
from backends.errors import InputError


@pytest.fixture
def corpus():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(size=(20, 8)) + [5, 0, 0, 0, 0, 0, 0, 0],
                        rng.normal(size=(20, 8)) + [0, 5, 0, 0, 0, 0, 0, 0]])
    meta = pd.DataFrame({"id": [f"it{i}" for i in range(40)], "kind": ["cat"] * 20 + ["dog"] * 20,
                         "note": [f"Note {i}" for i in range(40)]})
    return Corpus("toy", v, meta, texts=[f"a picture of a {k}" for k in meta["kind"]])


def test_search_substring_column_value_and_regex(corpus):
    assert len(search_metadata(corpus, "DOG")) == 20
    assert search_metadata(corpus, "kind=cat").tolist() == list(range(20))
    assert search_metadata(corpus, r"note 1\d$", regex=True).tolist() == list(range(10, 20))
    assert len(search_metadata(corpus, "picture of a cat")) == 20  # item texts are searched too
    with pytest.raises(InputError, match="regular expression"):
        search_metadata(corpus, "(", regex=True)
    with pytest.raises(InputError, match="empty"):
        search_metadata(corpus, "  ")


def test_groups_by_ids_or_search(corpus):
    assert resolve_group(corpus, "it3, it5").tolist() == [3, 5]
    assert len(resolve_group(corpus, "kind=dog")) == 20
    with pytest.raises(InputError, match="matches no item"):
        resolve_group(corpus, "zebra")


def test_custom_axes_separate_the_two_groups(corpus):
    xy, titles = custom_axes(corpus, "kind=cat", "kind=dog")
    assert xy.shape == (40, 2)
    assert xy[:20, 0].min() > xy[20:, 0].max()  # cats on the right of every dog
    assert titles[0] == "kind=cat − kind=dog"
