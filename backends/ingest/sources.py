"""What SOURCE is, found out on the driver before Ray starts, so that bad input is a one-line InputError.

    images    a folder of images (any depth) or a .zip of them: one item per file, read later by the workers
    text      a Parquet file, or a folder of Parquet shards, with a text column (text, caption, sentence, …)
    vectors   the same with a vector column (vector, embedding, … or any list-of-numbers column): kept as they are
    hspace    "hspace", "hspace:N" or "hspace:N:STEP": h (UNet mid-block, mean over positions) of N generated
              samples of the default world's generator at denoising step STEP (default: the middle one)

Images are read by the workers, so on a cluster SOURCE must be on storage every node sees (the same
path). Parquet is read by Ray Data's own readers.
"""
from __future__ import annotations

import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from backends.corpora.loaders import IMAGE_EXTENSIONS, TEXT_COLUMN_NAMES, VECTOR_COLUMN_NAMES
from backends.errors import InputError

PARQUET_EXTENSIONS = (".parquet", ".pq")
MAX_IMAGE_BYTES = 256 * 2**20  # one image file (or zip member) larger than this is skipped
HSPACE = re.compile(r"^hspace(?::(\d+))?(?::(\d+))?$")
KINDS = ("images", "text", "vectors", "hspace")


@dataclass
class Source:
    kind: str  # one of KINDS
    name: str  # SOURCE as given
    rows: int  # items found (images: files; Parquet: rows in the footers; hspace: samples)
    description: str
    items: list[dict] = field(default_factory=list)  # images: {"id", "name", "path", "member"} per file
    files: list[str] = field(default_factory=list)  # Parquet files
    column: str | None = None  # the text or vector column
    id_column: str | None = None  # a Parquet "id" column, used as the id
    meta_columns: list[str] = field(default_factory=list)  # Parquet columns kept as metadata
    table: object = None  # hspace: a pyarrow Table (id, vector, metadata, thumbnail), made on the driver
    notes: list[str] = field(default_factory=list)

    def dataset(self, *, batch_size: int, workers: int):
        """The Ray Dataset of this source's rows (Ray must be initialised)."""
        import ray.data

        if self.kind == "images":
            # blocks of at most batch_size items, at least two per worker (each block is one encoder call)
            blocks = max(math.ceil(len(self.items) / batch_size), min(len(self.items), 2 * workers))
            return ray.data.from_items(self.items, override_num_blocks=blocks)
        if self.kind in ("text", "vectors"):
            columns = list(dict.fromkeys([c for c in (self.id_column, self.column) if c] + self.meta_columns))
            ds = ray.data.read_parquet(self.files, columns=columns)
            if self.kind == "text":  # blocks of one batch each (streaming), so that every encoder gets work
                ds = ds.repartition(target_num_rows_per_block=batch_size)
            return ds
        if self.kind == "hspace":
            return ray.data.from_arrow(self.table)
        raise AssertionError(self.kind)


def open_source(spec: str, *, pipe=None, hspace_seed: int = 0) -> Source:
    """SOURCE → Source. `pipe` (hspace only) replaces the default world's generator (tests pass a tiny one)."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("SOURCE is empty; give a folder or .zip of images, a Parquet file or folder, or hspace:N")
    p = Path(spec).expanduser()
    if not p.exists():
        m = HSPACE.match(spec.strip())
        if m:
            return hspace_source(spec, n=int(m.group(1)) if m.group(1) else None,
                                 step=int(m.group(2)) if m.group(2) else None, pipe=pipe, seed=hspace_seed)
        raise InputError(f"{spec}: no such file or folder (SOURCE is a folder or .zip of images, a Parquet file or "
                         "folder of Parquet shards, or hspace:N)")
    if p.is_dir():
        return _folder(p, spec)
    suffix = p.suffix.lower()
    with open(p, "rb") as f:
        head = f.read(4)
    if suffix == ".zip" or head == b"PK\x03\x04":
        return _zip(p, spec)
    if suffix in PARQUET_EXTENSIONS or head == b"PAR1":
        return _parquet([p], spec)
    if suffix in IMAGE_EXTENSIONS:
        raise InputError(f"{spec}: a single image; give a folder or .zip of images")
    raise InputError(f"{spec}: unsupported file type {suffix or '(no extension)'!r}; SOURCE is a folder or .zip of "
                     "images, a Parquet file or folder of Parquet shards, or hspace:N")


# -- images ----------------------------------------------------------------------------------


def _hidden(parts) -> bool:
    return any(part.startswith(".") for part in parts if part) or (bool(parts) and parts[0] == "__MACOSX")


def _folder(p: Path, spec: str) -> Source:
    """Images (any depth) or else Parquet shards. Symbolic links are not followed; hidden files are skipped."""
    images: list[Path] = []
    parquet: list[Path] = []
    other = 0
    for root, dirs, files in os.walk(p, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (Path(root) / d).is_symlink())
        for f in sorted(files):
            fp = Path(root) / f
            if f.startswith(".") or fp.is_symlink() or not fp.is_file():
                continue
            ext = fp.suffix.lower()
            if ext in IMAGE_EXTENSIONS:
                images.append(fp)
            elif ext in PARQUET_EXTENSIONS:
                parquet.append(fp)
            else:
                other += 1
    if images:
        notes = [f"skipped {len(parquet) + other} file(s) that are not images"] if parquet or other else []
        items = [{"name": f.relative_to(p).as_posix(), "path": str(f.resolve()), "member": ""} for f in images]
        return _images(items, spec, f"{len(items):,} images in {p.name or spec}/", notes)
    if parquet:
        return _parquet(parquet, spec)
    if other:
        raise InputError(f"{spec}: no images ({' '.join(IMAGE_EXTENSIONS)}) and no Parquet files in the folder "
                         f"({other} other file(s))")
    raise InputError(f"{spec}: the folder is empty")


def _zip(p: Path, spec: str) -> Source:
    try:
        with zipfile.ZipFile(p) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(f"{spec}: not a readable .zip ({exc})") from None
    items, notes, big, other = [], [], [], 0
    for info in infos:
        parts = re.split(r"[\\/]", info.filename)
        if info.is_dir() or _hidden(parts):
            continue
        if Path(info.filename).suffix.lower() not in IMAGE_EXTENSIONS:
            other += 1
        elif info.file_size > MAX_IMAGE_BYTES:
            big.append(info.filename)
        else:
            items.append({"name": info.filename, "path": str(p.resolve()), "member": info.filename})
    if other:
        notes.append(f"skipped {other} member(s) that are not images")
    if big:
        notes.append(f"skipped {len(big)} member(s) over {MAX_IMAGE_BYTES // 2**20} MB: {', '.join(big[:5])}")
    if not items:
        raise InputError(f"{spec}: no images ({' '.join(IMAGE_EXTENSIONS)}) in the .zip"
                         + (f" ({'; '.join(notes)})" if notes else ""))
    return _images(items, spec, f"{len(items):,} images in {p.name}", notes)


def _images(items: list[dict], spec: str, description: str, notes: list[str]) -> Source:
    if len(items) < 2:
        raise InputError(f"{spec}: only 1 image; at least 2 are needed to build a map")
    seen: set[str] = set()
    for it in items:  # id: the path inside SOURCE without its extension, made unique (a.png + a.jpg)
        base = it["name"].rsplit(".", 1)[0] or "image"
        cand, k = base, 2
        while cand in seen:
            cand, k = f"{base}-{k}", k + 1
        seen.add(cand)
        it["id"] = cand
    return Source("images", spec, len(items), description, items=items, notes=list(notes))


# -- Parquet ---------------------------------------------------------------------------------


def _is_numeric_list(t) -> bool:
    import pyarrow as pa

    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        v = t.value_type
        return pa.types.is_integer(v) or pa.types.is_floating(v)
    return False


def _is_scalar(t) -> bool:
    import pyarrow as pa

    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
            or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t)
            or pa.types.is_decimal(t) or pa.types.is_dictionary(t))


def _parquet(files: list[Path], spec: str) -> Source:
    import pyarrow.parquet as pq

    schemas, rows = [], 0
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as exc:  # noqa: BLE001 - pyarrow's own error on a damaged file, as a message
            raise InputError(f"{f.name}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
        schemas.append(pf.schema_arrow)
        rows += pf.metadata.num_rows
    first = schemas[0]
    for f, s in zip(files[1:], schemas[1:]):
        if s.names != first.names:
            raise InputError(f"{f.name}: its columns ({', '.join(s.names[:10])}) differ from {files[0].name}'s "
                             f"({', '.join(first.names[:10])}); every shard needs the same columns")
    if rows == 0:
        raise InputError(f"{spec}: the Parquet file(s) have no rows")
    if rows < 2:
        raise InputError(f"{spec}: only 1 row; at least 2 are needed to build a map")
    lower = {n.lower(): n for n in first.names}
    types = {n: first.field(n).type for n in first.names}
    vec = next((lower[n] for n in VECTOR_COLUMN_NAMES if n in lower and _is_numeric_list(types[lower[n]])), None)
    vec = vec or next((n for n in first.names if _is_numeric_list(types[n])), None)
    text = None
    if vec is None:
        text = next((lower[n] for n in TEXT_COLUMN_NAMES if n in lower and _is_text(types[lower[n]])), None)
        strings = [n for n in first.names if _is_text(types[n]) and n.lower() != "id"]
        text = text or (strings[0] if len(strings) == 1 else None)
        if text is None:
            raise InputError(
                f"{spec}: found neither vectors (a column named {' / '.join(VECTOR_COLUMN_NAMES)} or any column of "
                f"lists of numbers) nor text (a column named {' / '.join(TEXT_COLUMN_NAMES)}); columns are: "
                + ", ".join(f"{n} ({types[n]})" for n in first.names[:20]))
    id_col = lower.get("id")
    id_col = id_col if id_col is not None and _is_scalar(types[id_col]) else None
    meta = [n for n in first.names if n not in (vec, id_col) and _is_scalar(types[n])]
    dropped = [n for n in first.names if n not in (vec, id_col) and n not in meta]
    notes = [f"columns {', '.join(map(repr, dropped))} are not single values and were left out"] if dropped else []
    where = files[0].name if len(files) == 1 else f"{len(files)} Parquet shards in {Path(spec).name or spec}/"
    kind, what = ("vectors", f"vectors from column {vec!r}") if vec else ("text", f"text from column {text!r}")
    return Source(kind, spec, rows, f"{rows:,} rows of {where}, {what}", files=[str(f.resolve()) for f in files],
                  column=vec or text, id_column=id_col, meta_columns=meta, notes=notes)


def _is_text(t) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t)


# -- h-space ---------------------------------------------------------------------------------


def hspace_source(spec: str, *, n: int | None = None, step: int | None = None, pipe=None, seed: int = 0) -> Source:
    """h of n generations (backends.generative.hspace_corpus.shapes_bank), made here on the driver: sampling is
    sequential denoising, and the vectors need no encoder."""
    import pyarrow as pa

    from backends.generative.hspace_corpus import DEFAULT_SAMPLES, bank_corpus, shapes_bank

    bank = shapes_bank(pipe, n or DEFAULT_SAMPLES, seed=seed)
    steps = bank.h.shape[1]
    step = steps // 2 if step is None else int(step)
    if not 0 <= step < steps:
        raise InputError(f"{spec}: step must be between 0 and {steps - 1}, but is {step}")
    corpus = bank_corpus(bank, step)
    meta = corpus.meta.reset_index(drop=True)
    cols = {"id": pa.array(meta["id"].astype(str).tolist(), pa.string())}
    for c in meta.columns:
        if c != "id":
            cols[c] = pa.array(meta[c].tolist())
    from backends.ingest.write import png_bytes, vector_array

    cols["vector"] = vector_array(corpus.vectors)
    if corpus.images is not None:
        cols["thumbnail"] = pa.array([png_bytes(im) for im in corpus.images], pa.binary())
    table = pa.table(cols)
    return Source("hspace", spec, len(meta), corpus.description, column="vector", id_column="id",
                  meta_columns=[c for c in meta.columns if c != "id"], table=table)
