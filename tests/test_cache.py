import multiprocessing as mp
import time

import numpy as np

from backends.cache import ArtifactCache, content_key


def _compute_in_process(root, counter_path):
    cache = ArtifactCache(root)

    def compute():
        with open(counter_path, "a") as fh:
            fh.write("x")
        time.sleep(0.3)
        return {"a": np.arange(5)}

    arrays, _ = cache.get_or_compute("ns", "key1", compute)
    assert arrays["a"].tolist() == [0, 1, 2, 3, 4]


def test_two_processes_computing_the_same_key_compute_once(tmp_path):
    counter = tmp_path / "count.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_compute_in_process, args=(str(tmp_path), str(counter))) for _ in range(3)]
    [p.start() for p in procs]
    [p.join(60) for p in procs]
    assert all(p.exitcode == 0 for p in procs)
    assert counter.read_text() == "x"


def test_corrupt_entry_is_recomputed(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.path("ns", "k").write_bytes(b"not an npz")
    arrays, hit = cache.get_or_compute("ns", "k", lambda: {"v": np.ones(3)})
    assert not hit and arrays["v"].sum() == 3
    assert cache.get_or_compute("ns", "k", lambda: {"v": np.zeros(3)})[1]


def test_content_key_depends_on_values_and_params():
    a = np.arange(10, dtype=np.float32)
    assert content_key(a, {"k": 1}) == content_key(a.copy(), {"k": 1})
    assert content_key(a, {"k": 1}) != content_key(a, {"k": 2})
    assert content_key(a, {"k": 1}) != content_key(a + 1, {"k": 1})
