"""Shared helpers for the benchmarks: embedding-like synthetic data and timing."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def embedding_like(n: int, d: int = 64, *, seed: int = 0, centers: int = 100, intrinsic: int = 12) -> np.ndarray:
    """Clusters in a low-dimensional latent mapped linearly to d dims plus small noise (as real embeddings are)."""
    world = np.random.default_rng(1234)
    c = world.normal(size=(centers, intrinsic)) * 3
    w = world.normal(size=(intrinsic, d)) / np.sqrt(intrinsic)
    rng = np.random.default_rng(seed)
    z = c[rng.integers(0, centers, n)] + rng.normal(size=(n, intrinsic))
    return (z @ w + 0.05 * rng.normal(size=(n, d))).astype(np.float32)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
