"""A content-addressed on-disk cache for computed artefacts (projections, kNN graphs, thumbnails).

Keys are hashes of the inputs and parameters. Writes go to a temporary file and are renamed
into place, and a per-key file lock makes two requests that compute the same thing at once
compute it once: the second waits, then reads the first one's result.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def content_key(*parts) -> str:
    """Stable hash of strings, numbers, dicts (JSON, sorted keys) and numpy arrays."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            arr = np.ascontiguousarray(part)
            h.update(f"nd{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:40]


class ArtifactCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, namespace: str, key: str, suffix: str = ".npz") -> Path:
        d = self.root / namespace
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{key}{suffix}"

    @contextmanager
    def lock(self, namespace: str, key: str):
        """Exclusive across threads (threading.Lock) and processes (flock on a lock file)."""
        name = f"{namespace}/{key}"
        with self._guard:
            tlock = self._thread_locks.setdefault(name, threading.Lock())
        with tlock:
            lock_path = self.path(namespace, key, ".lock")
            with open(lock_path, "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def get_arrays(self, namespace: str, key: str) -> dict[str, np.ndarray] | None:
        p = self.path(namespace, key)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception:
            return None  # a corrupt entry is recomputed

    def put_arrays(self, namespace: str, key: str, arrays: dict[str, np.ndarray]) -> Path:
        p = self.path(namespace, key)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return p

    def get_or_compute(
        self, namespace: str, key: str, compute: Callable[[], dict[str, np.ndarray]]
    ) -> tuple[dict[str, np.ndarray], bool]:
        """Return (arrays, hit). `compute` runs at most once per key across threads and processes."""
        found = self.get_arrays(namespace, key)
        if found is not None:
            return found, True
        with self.lock(namespace, key):
            found = self.get_arrays(namespace, key)
            if found is not None:
                return found, True
            arrays = compute()
            self.put_arrays(namespace, key, arrays)
            return arrays, False
