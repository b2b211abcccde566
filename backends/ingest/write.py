"""OUT's files: Parquet shards, and (with --projector) an Embedding Projector pair.

    OUT/shards/part-00000.parquet   id (string), vector (fixed_size_list<float32>[D]), the metadata columns,
                                    thumbnail (PNG bytes, 64×64; image and h-space sources)
    OUT/vectors.tsv                 --projector only: the same vectors, one row per line, tab-separated
                                    ("%.9g": float32 exactly), for TensorFlow's Embedding Projector
    OUT/metadata.tsv                --projector only: a header line, then id and the metadata columns

`latent-atlas --data OUT/` reads the shards themselves (backends/corpora/ingested.py), with
map.parquet and index.faiss. Rows are written in the order the dataset yields them (Ray Data keeps
order here), so row i of every file, and id i of the FAISS index, are the same item.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backends.errors import InputError

SHARDS = "shards"
NOT_METADATA = ("vector", "thumbnail", "error", "id", "path", "member", "name")


def vector_array(vectors: np.ndarray):
    """(N, D) → a pyarrow fixed_size_list<float32>[D] array."""
    import pyarrow as pa

    v = np.ascontiguousarray(vectors, dtype=np.float32)
    d = v.shape[1] if v.ndim == 2 else 0
    return pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), pa.float32()), d)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def vectors_of(column, what: str) -> np.ndarray:
    """A pyarrow list / large_list / fixed_size_list column of numbers → float32 (N, D), checked."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(col)
    if col.null_count:
        i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{what}: row {i} has no vector")
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
        flat = col.flatten()
    else:
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        d = int(lengths[0]) if n else 0
        if n and (lengths != d).any():
            i = int(np.flatnonzero(lengths != d)[0])
            raise InputError(f"{what}: row {i} has {lengths[i]} values but the first has {d}; every vector needs "
                             "the same number of dimensions")
        flat = col.flatten()
    if flat.null_count:
        raise InputError(f"{what}: some vectors have missing values")
    x = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, d)
    if d == 0:
        raise InputError(f"{what}: vectors have 0 dimensions")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise InputError(f"{what}: row {int(np.flatnonzero(bad)[0])} has a value that is not a finite float32")
    return x


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, float):
        return repr(v)
    return " ".join(str(v).replace("\t", " ").replace("\r", " ").replace("\n", " ").split())


@dataclass
class Written:
    rows: int = 0
    dim: int = 0
    shards: list[dict] = field(default_factory=list)  # {"file", "rows", "offset"} in order
    vector_refs: list = field(default_factory=list)  # Ray object refs of each shard's vectors, in order
    ids: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "name (why)" of items left out
    meta_columns: list[str] = field(default_factory=list)


class ShardWriter:
    """Write batches (pyarrow Tables with id?, vector, metadata, thumbnail?, error?) as shards (+ the
    Projector pair when `projector`)."""

    def __init__(self, out: Path, *, source: str, id_column: str | None = None, vector_column: str = "vector",
                 meta_columns: list[str] | None = None, put=None, projector: bool = False):
        self.out = Path(out)
        (self.out / SHARDS).mkdir(parents=True, exist_ok=True)
        self.source = source
        self.id_column = id_column
        self.vector_column = vector_column
        self.meta_columns = meta_columns  # None: every column not in NOT_METADATA, from the first batch
        self.put = put  # ray.put, to keep each shard's vectors in the object store for the index
        self.result = Written()
        self._seen: set[str] = set()
        self._vtsv = open(self.out / "vectors.tsv", "w", encoding="utf-8") if projector else None
        self._mtsv = open(self.out / "metadata.tsv", "w", encoding="utf-8") if projector else None

    def close(self) -> None:
        for f in (self._vtsv, self._mtsv):
            if f is not None:
                f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add(self, table) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if "error" in table.column_names:
            errors = table.column("error").to_pylist()
            names = table.column("filename").to_pylist() if "filename" in table.column_names else [""] * len(errors)
            self.result.skipped += [f"{n} ({e})" for n, e in zip(names, errors) if e]
            keep = [i for i, e in enumerate(errors) if not e]
            if len(keep) < table.num_rows:
                table = table.take(pa.array(keep, pa.int64()))
        n = table.num_rows
        if n == 0:
            return
        start = self.result.rows
        what = f"{self.source} (rows {start:,}–{start + n - 1:,})"
        vectors = vectors_of(table.column(self.vector_column), what)
        if self.result.dim and vectors.shape[1] != self.result.dim:
            raise InputError(f"{what}: vectors have {vectors.shape[1]} dimensions but earlier ones {self.result.dim}")
        self.result.dim = vectors.shape[1]
        if self.id_column and self.id_column in table.column_names:
            ids = ["" if v is None else str(v) for v in table.column(self.id_column).to_pylist()]
        else:
            ids = [f"row-{start + i}" for i in range(n)]
        for i, v in enumerate(ids):
            if not v:
                raise InputError(f"{what}: row {start + i} has an empty id")
            if v in self._seen:
                raise InputError(f"{self.source}: id {v!r} appears more than once; ids must be unique")
            self._seen.add(v)
        if self.meta_columns is None:
            self.meta_columns = [c for c in table.column_names if c not in NOT_METADATA and c != self.vector_column
                                 and c != self.id_column]
        if self._mtsv is not None and not self.result.shards:  # a second column always, so that it is a header
            self._mtsv.write("\t".join(_cell(c) for c in ["id", *(self.meta_columns or ["shard"])]) + "\n")
        cols = {"id": pa.array(ids, pa.string()), "vector": vector_array(vectors)}
        for c in self.meta_columns:
            cols[c] = table.column(c)
        if "thumbnail" in table.column_names:
            cols["thumbnail"] = table.column("thumbnail")
        k = len(self.result.shards)
        name = f"{SHARDS}/part-{k:05d}.parquet"
        pq.write_table(pa.table(cols), self.out / name)
        if self._vtsv is not None:
            self._write_projector(vectors, ids, table, name)
        self.result.shards.append({"file": name, "rows": n, "offset": start})
        self.result.ids += ids
        if self.put is not None:
            self.result.vector_refs.append(self.put(vectors))
        self.result.rows += n
        self.result.meta_columns = list(self.meta_columns)

    def _write_projector(self, vectors: np.ndarray, ids: list[str], table, name: str) -> None:
        np.savetxt(self._vtsv, vectors, fmt="%.9g", delimiter="\t")
        meta = [table.column(c).to_pylist() for c in self.meta_columns] or [[name] * len(ids)]
        for i in range(len(ids)):
            self._mtsv.write("\t".join([_cell(ids[i]), *(_cell(m[i]) for m in meta)]) + "\n")

    def finish(self) -> Written:
        self.close()
        r = self.result
        if r.rows == 0:
            skipped = f"; skipped: {'; '.join(r.skipped[:5])}" if r.skipped else ""
            raise InputError(f"{self.source}: nothing to write (no readable items){skipped}")
        if r.rows < 2:
            raise InputError(f"{self.source}: only 1 readable item; at least 2 are needed to build a map")
        return r


def read_vectors(out: Path) -> np.ndarray:
    """Every shard's vectors, in order (what the index and the map were built from)."""
    import pyarrow.parquet as pq

    files = sorted((Path(out) / SHARDS).glob("part-*.parquet"))
    return np.concatenate([vectors_of(pq.read_table(f, columns=["vector"]).column("vector"), f.name) for f in files])


__all__ = ["SHARDS", "ShardWriter", "Written", "png_bytes", "read_vectors", "vector_array", "vectors_of"]
