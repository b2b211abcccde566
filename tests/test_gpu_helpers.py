"""spaces.GPU is applied only on ZeroGPU Spaces; FAISS falls back to the CPU without faiss-gpu."""
from __future__ import annotations

import sys
import types

import numpy as np

from backends import gpu
from backends.corpora import index


def test_gpu_task_is_a_no_op_off_zero_gpu(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def f(x):
        return x + 1

    assert gpu.gpu_task(30)(f) is f


def test_gpu_task_wraps_with_spaces_gpu_on_zero_gpu(monkeypatch):
    calls = []
    fake = types.ModuleType("spaces")

    def GPU(duration=60):  # noqa: N802 (the real decorator's name)
        def deco(fn):
            def run(*a, **k):
                calls.append(duration)
                return fn(*a, **k)
            return run
        return deco

    fake.GPU = GPU
    fake.__spec__ = types.SimpleNamespace(name="spaces")
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setattr(gpu.importlib.util, "find_spec", lambda name: object() if name == "spaces" else None)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")

    @gpu.gpu_task(duration=45)
    def double(x):
        """doubles"""
        return 2 * x

    assert double(4) == 8 and calls == [45] and double.__doc__ == "doubles"


def test_faiss_index_auto_uses_the_cpu_without_a_faiss_gpu(monkeypatch):
    monkeypatch.setattr(index, "gpu_count", lambda: 0)
    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    idx = index.VectorIndex(x, metric="cosine", device="auto")
    assert idx.device == "cpu"
    d, i = idx.search(x[:3], 2)
    assert list(i[:, 0]) == [0, 1, 2]
