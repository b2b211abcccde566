"""An ingest's output folder (`python -m backends.ingest SOURCE OUT`) opened as a corpus.

    is_ingest_folder(out)          # manifest.json + shards/
    corpus = load_ingest(out)      # what load_path(out) does for such a folder

OUT/shards/part-*.parquet give the vectors (read column-wise, a batch of rows at a time, into one
float32 array), the ids, the metadata columns and the thumbnails (PNG bytes, decoded into
`Corpus.images`). `Corpus.precomputed` carries OUT/map.parquet's 2-D map and the path of
OUT/index.faiss, which the registry (backends/registry.py) uses as the corpus's map and index rather
than computing them again. Before anything is read the manifest and the shards' footers are checked
against each other, and the memory the corpus would take once served against the budget
(backends/corpora/memory.py); every problem is an InputError naming the file and what is wrong. A map
that does not match the shards is left out with a note (the app computes its own).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from backends.corpora.corpus import Corpus, Precomputed
from backends.errors import InputError

MANIFEST = "manifest.json"
SHARDS = "shards"
MAP = "map.parquet"
INDEX = "index.faiss"
FORMAT_PREFIX = "latent-atlas-ingest/"
THUMBNAIL_BYTES = 64 * 64 * 3  # the ingest's thumbnails, decoded
BATCH_VALUES = 1 << 20  # vector values read at a time


def is_ingest_folder(p) -> bool:
    p = Path(p)
    return (p / MANIFEST).is_file() and (p / SHARDS).is_dir()


def load_ingest(out, *, name: str | None = None) -> Corpus:
    """OUT → a Corpus with ids, vectors, metadata, thumbnails (image and h-space ingests) and `precomputed`."""
    import pyarrow.parquet as pq

    out = Path(out)
    name = name or out.name
    # 1. the manifest and the shards' footers, checked against each other
    manifest = _read_manifest(out)
    rows, dim = manifest["rows"], manifest["dim"]
    files = _shard_files(out, manifest)
    notes: list[str] = []
    opened = [pq.ParquetFile(f, buffer_size=1 << 20, pre_buffer=False) for f in files]
    try:
        meta_cols, has_thumbs = _check_shards(out, opened, manifest)
        # 2. will it fit? (before any value is read)
        _check_memory(out, opened, rows, dim, meta_cols, has_thumbs, manifest)
        # 3. vectors, ids and metadata, thumbnails
        vectors = np.empty((rows, dim), np.float32)
        images = np.empty((rows, 64, 64, 3), np.uint8) if has_thumbs else None
        tables, row = [], 0
        for f, pf in zip(files, opened):
            n = pf.metadata.num_rows
            _read_vectors(pf, vectors[row:row + n], f"{out.name}/{SHARDS}/{f.name}")
            table = pf.read(columns=["id", *meta_cols])
            if images is not None:
                _read_thumbnails(pf, images[row:row + n], table.column("id").to_pylist(),
                                 f"{out.name}/{SHARDS}/{f.name}")
            tables.append(table)
            row += n
    finally:
        for pf in opened:
            pf.close()
    meta = _metadata(tables, out)
    del tables
    from backends.corpora.loaders import _sanitize_meta, _texts_from

    meta = _sanitize_meta(meta, copy=False)
    notes.append(f"opened as an ingest ({len(files)} shard(s) of {out.name}/{SHARDS}/)"
                 + (f"; metadata columns: {', '.join(meta_cols)}" if meta_cols else ""))
    texts = _texts_from(meta, notes)
    # 4. what the ingest computed: the map (checked here) and the index (checked when first used)
    xy, map_params = _read_map(out, manifest, meta["id"].astype(str).tolist(), notes)
    index_path = str(out / INDEX) if manifest.get("index") and (out / INDEX).is_file() else None
    if index_path:
        notes.append(f"neighbours from {INDEX} ({manifest['index'].get('kind', '?')}, cosine)")
    skipped = manifest.get("skipped") or []
    if skipped:
        notes.append(f"the ingest left out {len(skipped)} item(s) it could not read (listed in {MANIFEST})")
    encoder = manifest.get("encoder")
    return Corpus(name=name, vectors=vectors, meta=meta, images=images, texts=texts,
                  description=f"{rows:,} items × {dim:,} dims ingested from {manifest.get('source', '?')}"
                              + (f" (encoder {encoder})" if encoder else ""),
                  notes=notes,
                  precomputed=Precomputed(xy=xy, map_params=map_params, index_path=index_path))


# -- 1. manifest and shards ------------------------------------------------------------------


def _read_manifest(out: Path) -> dict:
    where = f"{out.name}/{MANIFEST}"
    try:
        m = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{where}: not readable JSON ({exc})") from None
    if not isinstance(m, dict) or not str(m.get("format", "")).startswith(FORMAT_PREFIX):
        raise InputError(f"{where}: not an ingest's manifest (no \"format\": \"{FORMAT_PREFIX}…\")")
    for key in ("rows", "dim"):
        if not isinstance(m.get(key), int) or isinstance(m.get(key), bool) or m[key] < 1:
            raise InputError(f"{where}: {key!r} must be a whole number ≥ 1, but is {m.get(key)!r}")
    shards = m.get("shards")
    if not isinstance(shards, list) or not shards or not all(
            isinstance(s, dict) and isinstance(s.get("file"), str) and isinstance(s.get("rows"), int) for s in shards):
        raise InputError(f"{where}: 'shards' must list the shards ({{\"file\", \"rows\"}} each)")
    listed = sum(s["rows"] for s in shards)
    if listed != m["rows"]:
        raise InputError(f"{where}: its shards add up to {listed:,} rows, but 'rows' says {m['rows']:,}")
    return m


def _shard_files(out: Path, manifest: dict) -> list[Path]:
    files = []
    for s in manifest["shards"]:
        rel = Path(s["file"])
        if rel.is_absolute() or ".." in rel.parts or rel.parts[:1] != (SHARDS,):
            raise InputError(f"{out.name}/{MANIFEST}: shard {s['file']!r} is not a file under {SHARDS}/")
        f = out / rel
        if not f.is_file():
            raise InputError(f"{out.name}/{s['file']}: missing ({MANIFEST} lists {len(manifest['shards'])} shard(s); "
                             "the folder is incomplete)")
        files.append(f)
    return files


def _check_shards(out: Path, opened, manifest: dict) -> tuple[list[str], bool]:
    """(metadata columns every shard has, whether they carry thumbnails); InputError on a mismatch."""
    import pyarrow as pa

    dim = manifest["dim"]
    common: list[str] | None = None
    thumbs = []
    for s, pf in zip(manifest["shards"], opened):
        where = f"{out.name}/{s['file']}"
        if pf.metadata.num_rows != s["rows"]:
            raise InputError(f"{where}: has {pf.metadata.num_rows:,} rows, but {MANIFEST} says {s['rows']:,}")
        schema = pf.schema_arrow
        for col in ("id", "vector"):
            if col not in schema.names:
                raise InputError(f"{where}: no {col!r} column (columns: {', '.join(schema.names)})")
        vt = schema.field("vector").type
        if not (pa.types.is_fixed_size_list(vt) or pa.types.is_list(vt) or pa.types.is_large_list(vt)):
            raise InputError(f"{where}: column 'vector' is {vt}, not a list of numbers")
        if pa.types.is_fixed_size_list(vt) and vt.list_size != dim:
            raise InputError(f"{where}: vectors have {vt.list_size} dims, but {MANIFEST} says {dim}")
        cols = [c for c in manifest.get("metadata_columns") or [] if c in schema.names]
        common = cols if common is None else [c for c in common if c in cols]
        thumbs.append("thumbnail" in schema.names)
    if any(thumbs) and not all(thumbs):
        raise InputError(f"{out.name}: some shards have thumbnails and some do not")
    return common or [], all(thumbs)


# -- 2. memory -------------------------------------------------------------------------------


def _check_memory(out: Path, opened, rows: int, dim: int, meta_cols: list[str], has_thumbs: bool,
                  manifest: dict) -> None:
    """Refuse, before reading, a corpus whose estimate once served is over the budget (as Backends.check_memory
    does after a load): the ids' and metadata's uncompressed size from the footers, 64×64 RGB thumbnails,
    OUT's own index file (not the one the app would build) and no UMAP fit when OUT has its map."""
    from backends.corpora.loaders import _limits
    from backends.corpora.memory import budget_bytes, estimate_serving_bytes, index_file_kind, over_budget

    wanted = {"id", *meta_cols}
    meta_bytes = 0
    for pf in opened:
        md = pf.metadata
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for j in range(rg.num_columns):
                c = rg.column(j)
                if c.path_in_schema.split(".")[0] in wanted:
                    meta_bytes += c.total_uncompressed_size + 50 * c.num_values  # pandas' objects cost more
    index = out / INDEX
    index_file = (index_file_kind(index), index.stat().st_size) if manifest.get("index") and index.is_file() else None
    est = estimate_serving_bytes(rows, dim, meta_bytes=meta_bytes,
                                 image_bytes=rows * THUMBNAIL_BYTES if has_thumbs else 0, index_file=index_file,
                                 has_map=bool(manifest.get("map")) and (out / MAP).is_file())
    budget = _limits().memory_budget or budget_bytes()
    refusal = over_budget(est, budget, out.name)
    if refusal:
        raise InputError(refusal)


# -- 3. values -------------------------------------------------------------------------------


def _read_vectors(pf, into: np.ndarray, where: str) -> None:
    """The shard's 'vector' column into `into` (its rows of the corpus's array), a batch at a time: each
    batch's values taken as they are (zero-copy for float32) and copied once."""
    import pyarrow as pa

    n, dim = into.shape
    row = 0
    for rb in pf.iter_batches(batch_size=max(64, BATCH_VALUES // dim), columns=["vector"], use_pandas_metadata=False):
        chunk = rb.column(0)
        if chunk.null_count:
            i = row + int(np.flatnonzero(chunk.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{where}: row {i} has no vector")
        if pa.types.is_fixed_size_list(chunk.type):
            width = chunk.type.list_size
        else:
            lengths = np.diff(chunk.offsets.to_numpy())
            bad = np.flatnonzero(lengths != dim)
            if len(bad):
                width = int(lengths[bad[0]])
                raise InputError(f"{where}: row {row + int(bad[0])} has a vector of {width} dims, but the manifest "
                                 f"says {dim}")
            width = dim
        if width != dim:
            raise InputError(f"{where}: vectors have {width} dims, but the manifest says {dim}")
        values = chunk.flatten()
        if values.null_count or not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
            raise InputError(f"{where}: vector values must be numbers without gaps, but are {values.type}"
                             + (f" with {values.null_count} missing" if values.null_count else ""))
        into[row:row + len(chunk)] = values.to_numpy(zero_copy_only=False).reshape(len(chunk), dim)
        row += len(chunk)
    if row != n:
        raise InputError(f"{where}: {row:,} vectors read, but the footer says {n:,} rows")


def _read_thumbnails(pf, into: np.ndarray, ids: list, where: str) -> None:
    """The shard's PNG thumbnails, decoded as the loaders decode images (RGB on white, letterboxed to 64×64)."""
    from backends.corpora.loaders import THUMBNAIL_SIZE, _decode_image, _letterbox, _Skip

    row = 0
    for rb in pf.iter_batches(batch_size=1024, columns=["thumbnail"], use_pandas_metadata=False):
        for data in rb.column(0).to_pylist():
            if not isinstance(data, (bytes, bytearray)) or not data:
                raise InputError(f"{where}: row {row} (id {ids[row]!r}) has no thumbnail")
            try:
                im, size = _decode_image(bytes(data))
            except _Skip as exc:
                raise InputError(f"{where}: the thumbnail of row {row} (id {ids[row]!r}) does not decode ({exc})") \
                    from None
            into[row] = np.asarray(im, np.uint8) if size == (THUMBNAIL_SIZE, THUMBNAIL_SIZE) \
                else _letterbox(im, THUMBNAIL_SIZE)
            row += 1


def _metadata(tables: list, out: Path):
    import pyarrow as pa

    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"{out.name}: the shards' metadata columns have different types ({exc})") from None
    return table.to_pandas()


# -- 4. the ingest's map ---------------------------------------------------------------------


def _read_map(out: Path, manifest: dict, ids: list[str], notes: list[str]) -> tuple[np.ndarray | None, dict | None]:
    """map.parquet's (N, 2) float32 and the ProjectionParams fields it was made with; (None, None), with a note,
    when there is none or it does not match the shards row for row."""
    import pyarrow.parquet as pq

    info = manifest.get("map")
    if not isinstance(info, dict) or not (out / MAP).is_file():
        return None, None
    try:
        t = pq.read_table(out / MAP, columns=["id", "x", "y"])
        xy = np.stack([t.column("x").to_numpy(zero_copy_only=False), t.column("y").to_numpy(zero_copy_only=False)],
                      axis=1).astype(np.float32)
        map_ids = [str(v) for v in t.column("id").to_pylist()]
    except Exception as exc:  # noqa: BLE001 - a bad map is left out, not fatal
        notes.append(f"{MAP} not used ({type(exc).__name__}: {exc}); the map is computed here")
        return None, None
    if map_ids != ids:
        notes.append(f"{MAP} not used: its {len(map_ids):,} ids are not the shards' {len(ids):,} in order; "
                     "the map is computed here")
        return None, None
    if not np.isfinite(xy).all():
        notes.append(f"{MAP} not used: it has NaN or Inf coordinates; the map is computed here")
        return None, None
    params = {"method": info.get("method", "umap"), "metric": info.get("metric", "cosine"),
              **(info.get("params") or {})}
    notes.append(f"map from {MAP} ({params['method'].upper()}, computed by the ingest)")
    return xy, params


__all__ = ["INDEX", "MAP", "is_ingest_folder", "load_ingest"]
