"""The first neighbours click never waits for a large index: a scan answers while it builds."""
import time

import numpy as np

from backends.corpora.index import brute_force_knn, exact_neighbours
from backends.registry import Backends
from backends.settings import Settings


def test_exact_neighbours_match_brute_force_for_both_metrics():
    x = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
    for metric in ("cosine", "euclidean"):
        d_ref, i_ref = brute_force_knn(x, x[7:8], 6, metric)
        d, i = exact_neighbours(x, x[7], 6, metric)
        assert list(i) == list(i_ref[0])
        np.testing.assert_allclose(d, d_ref[0], atol=1e-4)


def test_a_click_is_answered_while_the_index_builds_and_the_index_follows(tmp_path, monkeypatch):
    import backends.registry as reg

    b = Backends(Settings.from_env(cache_dir=str(tmp_path / "c")))
    b.settings.exact_index_below = 100  # digits (1,797 rows) counts as large here
    real = reg.VectorIndex

    def slow_index(*a, **k):  # a build that takes a while, as a million rows would
        time.sleep(2.0)
        return real(*a, **k)

    monkeypatch.setattr(reg, "VectorIndex", slow_index)
    b.corpus("digits")  # loaded first: the time below is the click's
    t0 = time.perf_counter()
    d, i = b.neighbours("digits", 0, k=5)
    assert time.perf_counter() - t0 < 1.5  # not behind the build
    ref_d, ref_i = brute_force_knn(b.corpus("digits").vectors, b.corpus("digits").vectors[:1], 6)
    assert list(i) == [j for j in ref_i[0] if j != 0][:5]
    b._index_threads[("digits", "cosine")].join(timeout=60)
    assert ("digits", "cosine") in b._indexes  # later clicks use the index
    d2, i2 = b.neighbours("digits", 0, k=5)
    assert len(set(i2) & set(i)) >= 4
