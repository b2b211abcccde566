"""What serving a corpus costs in memory, and the budget it has to fit (issue #21 item 2).

A server used to refuse corpora above a fixed 300,000 rows. Now `Backends.add_path` (uploads and
--data files) estimates what a corpus will hold in memory once it is served, and refuses it, naming
the file, its rows × dims, the estimate and the budget, when the estimate is over the budget:

    est = estimate_serving_bytes(n, d, exact_below=20_000, ivf_above=1_000_000, meta_bytes=...)
    est.total, est.describe()        # bytes; "1.4 GB (vectors 1.1 GB, HNSW index 0.2 GB, …)"
    budget_bytes(settings.memory_budget_gb)

The estimate counts the float32 vectors, the FAISS index the corpus gets (index_kind_for: flat,
HNSW or IVF; backends/corpora/index.py:index_bytes), the row norms a first neighbours click scans
with, the 2-D map, the UMAP fit on its sample (ProjectionParams.sample rows), and the metadata and
thumbnails as loaded. One corpus at a time: uploads kept in memory are dropped least recently used
(Backends.MAX_USER_CORPORA), and stored ones are memory-mapped when read again.

The budget: Settings.memory_budget_gb, or LATENT_ATLAS_MEMORY_BUDGET_GB; unset (0), 60% of the
memory this process may use (the machine's, or its container's limit when that is lower).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

BUDGET_SHARE = 0.6  # of the machine's (or container's) memory, when no budget is set
FALLBACK_TOTAL = 8 * 1024**3  # when the memory size cannot be read
UMAP_BYTES_PER_ROW = 600  # the sample's kNN graph, fuzzy graph and layout state, beyond its vectors
MAP_SAMPLE = 100_000  # ProjectionParams.sample's default


def total_memory_bytes() -> int | None:
    """The memory this process may use: the machine's (psutil, /proc/meminfo or sysconf), or its
    cgroup's limit when that is lower; None when none can be read."""
    total = None
    try:
        import psutil

        total = int(psutil.virtual_memory().total)
    except Exception:  # psutil is optional
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemTotal:"):
                        total = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            try:
                total = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
            except (AttributeError, ValueError, OSError):
                total = None
    limit = _cgroup_limit()
    if limit is not None and (total is None or limit < total):
        total = limit
    return total


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:  # "max" or a huge number: no limit
            return int(raw)
    return None


def budget_bytes(budget_gb: float = 0.0) -> int:
    """The memory budget in bytes: `budget_gb` GiB when > 0, else BUDGET_SHARE of total_memory_bytes()."""
    if budget_gb and budget_gb > 0:
        return int(float(budget_gb) * 1024**3)
    total = total_memory_bytes()
    return int(BUDGET_SHARE * (total if total else FALLBACK_TOTAL))


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a served corpus holds, by part."""

    rows: int
    dims: int
    index_kind: str
    vectors: int
    index: int
    norms: int
    map: int
    projection: int
    metadata: int
    images: int

    @property
    def total(self) -> int:
        return (self.vectors + self.index + self.norms + self.map + self.projection + self.metadata
                + self.images)

    def describe(self) -> str:
        label = {"flat": "exact index", "hnsw": "HNSW index", "ivf": "IVF index"}[self.index_kind]
        parts = [("vectors", self.vectors), (label, self.index), ("2-D map", self.map + self.norms),
                 ("UMAP sample", self.projection), ("metadata", self.metadata), ("thumbnails", self.images)]
        return (f"{fmt_bytes(self.total)} (" + ", ".join(f"{name} {fmt_bytes(b)}" for name, b in parts if b)
                + ")")


def estimate_serving_bytes(n: int, d: int, *, exact_below: int = 20_000, ivf_above: int = 1_000_000,
                           hnsw_m: int = 32, meta_bytes: int = 0, image_bytes: int = 0,
                           sample: int = MAP_SAMPLE, index_file: tuple[str, int] | None = None,
                           has_map: bool = False) -> MemoryEstimate:
    """What serving n × d float32 vectors costs (see the module docstring). meta_bytes and
    image_bytes: the metadata table's and thumbnails' own size, as loaded. An ingest's corpus
    brings its own index and map: index_file (kind "flat" or "ivf", its size in bytes: FAISS reads
    it whole) replaces the index the app would build, and has_map means no UMAP is fitted."""
    from backends.corpora.index import index_bytes, index_kind_for

    n, d = int(n), int(d)
    kind = index_kind_for(n, exact_below=exact_below, ivf_above=ivf_above)
    index = index_bytes(n, d, kind, hnsw_m=hnsw_m)
    if index_file is not None:
        kind, index = index_file[0], int(index_file[1])
    fit = 0 if has_map else (min(n, sample) if sample else n)
    return MemoryEstimate(
        rows=n, dims=d, index_kind=kind,
        vectors=n * d * 4,
        index=index,
        norms=n * 4,  # row norms: a first neighbours click scans with them while the index builds
        map=n * 2 * 4 * 2,  # float32 (x, y), and the copy read back from the cache
        projection=fit * (d * 4 + UMAP_BYTES_PER_ROW),
        metadata=int(meta_bytes), images=int(image_bytes),
    )


def estimate_corpus(corpus, *, exact_below: int = 20_000, ivf_above: int = 1_000_000) -> MemoryEstimate:
    """estimate_serving_bytes for a loaded Corpus (its metadata measured with pandas, deep)."""
    try:
        meta = int(corpus.meta.memory_usage(deep=True, index=True).sum())
    except Exception:  # an odd column type: count the rows and columns instead
        meta = len(corpus.meta) * max(1, len(corpus.meta.columns)) * 64
    texts = sum(len(t) + 50 for t in corpus.texts) if corpus.texts is not None else 0
    images = int(corpus.images.nbytes) if corpus.images is not None else 0
    return estimate_serving_bytes(len(corpus), corpus.dim, exact_below=exact_below, ivf_above=ivf_above,
                                  meta_bytes=meta + texts, image_bytes=images, **precomputed_parts(corpus.precomputed))


def precomputed_parts(pre) -> dict:
    """estimate_serving_bytes's index_file / has_map for an ingest's Precomputed (or None)."""
    if pre is None:
        return {}
    out: dict = {"has_map": pre.xy is not None}
    if pre.index_path and os.path.isfile(pre.index_path):
        out["index_file"] = (index_file_kind(pre.index_path), os.path.getsize(pre.index_path))
    return out


def index_file_kind(path) -> str:
    """"ivf" or "flat" for an ingest's index file, from FAISS's fourcc at its start (IndexIDMap: "IxM…",
    IndexIVFFlat: "IwFl"), without reading the rest."""
    with open(path, "rb") as f:
        head = f.read(4)
    return "ivf" if head.startswith(b"Iw") else "flat"


def over_budget(est: MemoryEstimate, budget: int, source: str) -> str | None:
    """The refusal when `est` is over `budget` (naming the source, its size, the estimate by part, the
    budget and how to raise it); None when it fits."""
    if est.total <= budget:
        return None
    return (f"{source}: {est.rows:,} rows × {est.dims:,} dims would take about {est.describe()} of memory to "
            f"serve, over this server's budget of {fmt_bytes(budget)}; raise it with LATENT_ATLAS_MEMORY_BUDGET_GB "
            f"(e.g. LATENT_ATLAS_MEMORY_BUDGET_GB={max(1, -(-est.total // 1024**3) + 1)}) on a machine with that "
            "much memory, or upload fewer rows or dimensions")


def fmt_bytes(n: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
