"""The Corpus: one set of vectors with ids, metadata and optional thumbnails or texts.

Every data source (bundled digits, user uploads, the Shapes world, diffusion h-space)
produces a Corpus; everything downstream (index, projection, clusters, UI) consumes one.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from backends.errors import InputError


@dataclass(frozen=True)
class Precomputed:
    """What an ingest (backends/ingest/) computed for a corpus, for the app to use rather than compute again.

    xy:          float32 (N, 2), the 2-D map (map.parquet), made with `map_params` (ProjectionParams fields)
    index_path:  a FAISS index file whose id i is row i (index.faiss), for queries in `index_metric`
    """

    xy: np.ndarray | None = None
    map_params: dict | None = None
    index_path: str | None = None
    index_metric: str = "cosine"


@dataclass
class Corpus:
    """A named set of N vectors.

    vectors: float32 array (N, D), C-contiguous, finite.
    meta:    pandas DataFrame with N rows; column "id" (str, unique) always present,
             other columns are metadata users can colour, search and export by.
    images:  optional uint8 array (N, H, W, 3) of thumbnails (grey images repeated to RGB).
    texts:   optional list of N strings shown on hover when there are no images.
    """

    name: str
    vectors: np.ndarray
    meta: pandas.DataFrame  # noqa: F821
    images: np.ndarray | None = None
    texts: list[str] | None = None
    description: str = ""
    notes: list[str] = field(default_factory=list)  # things the loader skipped or changed, shown to the user
    # Optional: free text → a (D,) vector in this corpus's space (an aligned text encoder), for search by meaning.
    text_query: Callable[[str], np.ndarray] | None = field(default=None, repr=False)
    precomputed: Precomputed | None = field(default=None, repr=False)  # an ingest's map and index
    _fingerprint: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.vectors = validate_vectors(self.vectors, what=f"corpus {self.name!r}")
        n = len(self.vectors)
        if len(self.meta) != n:
            raise InputError(f"corpus {self.name!r}: metadata has {len(self.meta)} rows but there are {n} vectors")
        if "id" not in self.meta.columns:
            self.meta.insert(0, "id", [str(i) for i in range(n)])
        self.meta["id"] = self.meta["id"].astype(str)
        if self.meta["id"].duplicated().any():
            dup = self.meta["id"][self.meta["id"].duplicated()].iloc[0]
            raise InputError(f"corpus {self.name!r}: id {dup!r} appears more than once")
        self.meta = self.meta.reset_index(drop=True)
        if self.images is not None:
            if len(self.images) != n:
                raise InputError(f"corpus {self.name!r}: {len(self.images)} images for {n} vectors")
            if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
                raise ValueError(f"corpus images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if self.texts is not None and len(self.texts) != n:
            raise InputError(f"corpus {self.name!r}: {len(self.texts)} texts for {n} vectors")

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def fingerprint(self) -> str:
        """Content hash of the vectors (used as a cache key for projections and indexes)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(str(self.vectors.shape).encode())
            h.update(memoryview(np.ascontiguousarray(self.vectors)).cast("B"))  # no copy of the vectors
            self._fingerprint = h.hexdigest()[:32]
        return self._fingerprint

    def metadata_columns(self) -> list[str]:
        return [c for c in self.meta.columns if c != "id"]


def validate_vectors(x, *, what: str = "vectors", min_rows: int = 2) -> np.ndarray:
    """Coerce to float32 (N, D) C-contiguous and check it is usable; raise InputError if not."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{what}: could not read as a numeric array ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{what}: expected numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        raise InputError(f"{what}: expected a 2-D array (rows × dimensions), got 1-D shape {arr.shape}")
    if arr.ndim != 2:
        raise InputError(f"{what}: expected a 2-D array (rows × dimensions), got shape {arr.shape}")
    n, d = arr.shape
    if n == 0:
        raise InputError(f"{what}: no rows")
    if d == 0:
        raise InputError(f"{what}: rows have 0 dimensions")
    if n < min_rows:
        raise InputError(f"{what}: only {n} row; at least {min_rows} are needed to build a map")
    wide = arr
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, with the values
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    # both checks a block of rows at a time: no (N, D) boolean temporaries (issue #21)
    bad = np.concatenate([~np.isfinite(block).all(axis=1) for block in _blocks(arr)])
    if bad.any():
        rows = np.flatnonzero(bad)
        _check_float32_range(wide, rows, what)
        raise InputError(f"{what}: {len(rows)} row(s) contain NaN or Inf (rows {_rows(rows)})")
    if n > 1 and all(np.all(block == arr[0]) for block in _blocks(arr)):
        raise InputError(f"{what}: all {n} rows are identical; there is nothing to map")
    return arr


def _blocks(arr: np.ndarray, values: int = 1 << 22):
    step = max(1, values // max(1, arr.shape[1]))
    for s in range(0, len(arr), step):
        yield arr[s:s + step]


FLOAT32_MAX = float(np.finfo(np.float32).max)  # 3.4e38


def _check_float32_range(wide: np.ndarray, rows: np.ndarray, what: str) -> None:
    """Rows that became Inf only in the cast to float32 (finite float64 values beyond ±3.4e38):
    say so, with the largest value, rather than calling them NaN or Inf."""
    if wide.dtype.kind != "f" or wide.dtype.itemsize <= 4:
        return
    sub = np.asarray(wide[rows])
    finite = np.isfinite(sub)
    over = finite & (np.abs(np.where(finite, sub, 0)) > FLOAT32_MAX)
    over_rows = over.any(axis=1)
    if not over_rows.any():
        return
    vals = sub[over]
    ext = float(vals[np.argmax(np.abs(vals))])
    extreme = f"values up to {ext:.3g}" if ext > 0 else f"values down to {ext:.3g}"
    others = int((~finite).any(axis=1).sum())
    also = f"; {others} row(s) also contain NaN or Inf" if others else ""
    raise InputError(f"{what}: {extreme} exceed float32's range (±3.4e38) in {int(over_rows.sum())} "
                     f"row(s) (rows {_rows(rows[over_rows])}){also}; scale the vectors down (e.g. divide by their "
                     "norm)")


def _rows(rows: np.ndarray) -> str:
    return ", ".join(str(r) for r in rows[:5]) + (" …" if len(rows) > 5 else "")


# ---------------------------------------------------------------------------------------
# Registry of corpus loaders. Adding a corpus is one function: @register_corpus("name").

CorpusLoader = Callable[..., Corpus]
_LOADERS: dict[str, tuple[CorpusLoader, str]] = {}


def register_corpus(name: str, description: str = "") -> Callable[[CorpusLoader], CorpusLoader]:
    """Decorator: make a loader available by name (in the UI's corpus menu and `load_corpus`)."""

    def deco(fn: CorpusLoader) -> CorpusLoader:
        _LOADERS[name] = (fn, description or (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else description)
        return fn

    return deco


def available_corpora() -> dict[str, str]:
    _import_builtin_loaders()
    return {k: v[1] for k, v in _LOADERS.items()}


def load_corpus(name: str, **kwargs) -> Corpus:
    _import_builtin_loaders()
    if name not in _LOADERS:
        raise InputError(f"Unknown corpus: {name!r}. Must be one of: {', '.join(sorted(_LOADERS))}")
    return _LOADERS[name][0](**kwargs)


def loader_accepts(name: str, parameter: str) -> bool:
    """Whether the loader of corpus `name` takes a keyword `parameter` (False for unknown names)."""
    import inspect

    _import_builtin_loaders()
    if name not in _LOADERS:
        return False
    return parameter in inspect.signature(_LOADERS[name][0]).parameters


def _import_builtin_loaders() -> None:
    import importlib

    from backends.plugins import load_builtin_plugins

    load_builtin_plugins()  # the plug-ins' corpora (the Shapes world's "shapes")
    for mod in ("backends.corpora.loaders", "backends.generative.hspace_corpus"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real missing dependency inside the module
                raise
