"""The ingestion stages in order, on a Ray started here (local mode) or on a running cluster.

    manifest = ingest("photos/", "out/", encoder=None, ray_address=None, workers=2)

Local mode (no ray_address): ray.init() starts a single-node Ray in this process's machine (a
head and worker processes on its cores and GPUs; no legacy `local_mode`), and shuts it down at the
end. With ray_address ("auto", "ray://head:10001", "host:6379") the same code joins that cluster:
the actor pool spreads over its nodes (one GPU per worker where the cluster has GPUs) and the index
tasks too; every node needs this package installed (the same version), and SOURCE on storage all
nodes see. When Ray is already initialised (a notebook, the tests), it is used and left running.

OUT is written to a temporary folder beside it and renamed at the end, so a failed run leaves no
half-written OUT. An existing OUT is replaced only when it holds an earlier ingest (manifest.json)
and overwrite=True.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

from backends.errors import InputError

FORMAT = "latent-atlas-ingest/1"
MANIFEST = "manifest.json"


def _log(msg: str) -> None:
    print(f"[ingest] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None):
    """Ray for the duration: joined (address), started locally, or the one already running (left running)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    kwargs = dict(include_dashboard=False, configure_logging=True, logging_level=logging.WARNING,
                  log_to_driver=False)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def plan_resources(ray, source_kind: str, workers: int, gpu_capable: bool) -> tuple[float, float]:
    """(CPUs, GPUs) per worker. Parquet reads need one CPU beside the actors (Ray's read tasks ask for one),
    else the actors would hold every CPU and the reads never run; the CPUs are Ray's logical ones (each
    encoder runs torch on max(1, int(CPUs)) threads). A worker gets a whole GPU when there are enough."""
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))
    reserve = 1.0 if source_kind in ("text", "vectors") else 0.0
    per_cpu = max(0.1, min(1.0, (cpus - reserve) / workers))
    per_gpu = 0.0 if not gpu_capable or gpus <= 0 else min(1.0, gpus / workers)
    return round(per_cpu, 3), round(per_gpu, 3)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise InputError(f"{out}: OUT exists and is a file; give a folder to create")
        if any(out.iterdir()):
            if not (out / MANIFEST).is_file():
                raise InputError(f"{out}: OUT is a folder that is not empty (and not an earlier ingest); give a new "
                                 "or empty folder")
            if not overwrite:
                raise InputError(f"{out}: holds an earlier ingest; pass --overwrite to replace it")
    if not out.parent.exists():
        raise InputError(f"{out.parent}: no such folder (the parent of OUT)")


def _validate(workers, batch_size, shard_rows) -> None:
    for name, v, lo in (("--workers", workers, 1), ("--batch-size", batch_size, 1), ("--shard-rows", shard_rows, 2)):
        if not isinstance(v, int) or v < lo:
            raise InputError(f"{name} must be a whole number ≥ {lo}, but is {v!r}")


def ingest(source, out, *, encoder: str | None = None, ray_address: str | None = None, workers: int = 2,
           batch_size: int = 64, shard_rows: int = 10_000, make_map: bool = True, map_method: str = "umap",
           index: str = "auto", nlist: int | None = None, overwrite: bool = False, num_cpus: int | None = None,
           pipe=None, quiet: bool = False, projector: bool = False) -> dict:
    """SOURCE → OUT (shards, index.faiss, map.parquet, manifest.json; with `projector` also an Embedding
    Projector vectors.tsv + metadata.tsv). Returns the manifest.

    Raises InputError (before Ray starts, where it can) for bad input. `pipe` replaces the default
    generator for an hspace source; `num_cpus` caps a local Ray (ignored when joining one)."""
    from backends.ingest import embed as E
    from backends.ingest import index as X
    from backends.ingest import maps as M
    from backends.ingest import sources as S
    from backends.ingest.write import ShardWriter

    log = (lambda msg: None) if quiet else _log
    t_start = time.perf_counter()
    _validate(workers, batch_size, shard_rows)
    if index not in X.KINDS:
        raise InputError(f"--index must be one of {', '.join(X.KINDS)}, but is {index!r}")
    if map_method not in M.METHODS:
        raise InputError(f"--map-method must be one of {', '.join(M.METHODS)}, but is {map_method!r}")
    out = Path(out).expanduser().resolve()
    _check_out(out, overwrite)
    src = S.open_source(str(source), pipe=pipe)
    choice = E.choose_encoder(src.kind, encoder)
    log(f"source: {src.description}; encoder: {choice}")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        with ray_session(ray_address, num_cpus=num_cpus) as ray:
            import ray.data

            ctx = ray.data.DataContext.get_current()
            ctx.execution_options.preserve_order = True  # row i of every file is the same item
            ctx.enable_progress_bars = not quiet and sys.stderr.isatty()
            if quiet:
                logging.getLogger("ray.data").setLevel(logging.WARNING)
            cpus_per_worker, gpus_per_worker = plan_resources(ray, src.kind, workers, choice.gpu)
            nodes = len([n for n in ray.nodes() if n.get("Alive")])
            log(f"Ray: {'cluster ' + ray_address if ray_address else 'local'} ({nodes} node(s), "
                f"{ray.cluster_resources().get('CPU', 0):g} CPUs, {ray.cluster_resources().get('GPU', 0):g} GPUs); "
                f"{workers} worker(s) × {cpus_per_worker:g} CPU, {gpus_per_worker:g} GPU")
            t0 = time.perf_counter()
            # small sources: batches small enough that every worker gets one
            batch = max(1, min(batch_size, math.ceil(src.rows / workers)))
            ds = src.dataset(batch_size=batch, workers=workers)
            ds = E.embed(ds, src, choice, workers=workers, cpus_per_worker=cpus_per_worker,
                         gpus_per_worker=gpus_per_worker)
            vector_column = "vector" if choice.kind != "none" else src.column
            with ShardWriter(tmp, source=src.name, id_column="id" if src.kind == "images" else src.id_column,
                             vector_column=vector_column,
                             meta_columns=None if src.kind == "images" else src.meta_columns,
                             put=ray.put, projector=projector) as writer:
                for batch in _unwrapped(ds.iter_batches(batch_size=shard_rows, batch_format="pyarrow")):
                    writer.add(batch)
                written = writer.finish()
            t_embed = time.perf_counter() - t0
            t_stage = stage_seconds(ds) if choice.kind != "none" else None
            log(f"embedded and wrote {written.rows:,} rows × {written.dim} dims in {len(written.shards)} shard(s): "
                f"{t_embed:.1f} s ({written.rows / t_embed:,.1f} items/s)"
                + (f"; skipped {len(written.skipped)}" if written.skipped else ""))
            t0 = time.perf_counter()
            index_info = X.build_index(written.vector_refs, [s["rows"] for s in written.shards], written.dim,
                                       tmp / "index.faiss", kind=index, nlist=nlist)
            t_index = time.perf_counter() - t0
            log(f"FAISS {index_info['kind']} index of {index_info['rows']:,} vectors from {index_info['parts']} "
                f"part(s): {t_index:.1f} s")
            map_info, t_map = None, 0.0
            if make_map:
                import numpy as np

                t0 = time.perf_counter()
                vectors = np.concatenate(ray.get(written.vector_refs))
                map_info = M.write_map(tmp, written.ids, vectors, method=map_method)
                t_map = time.perf_counter() - t0
                log(f"{map_info['method'].upper()} map: {t_map:.1f} s")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = time.perf_counter() - t_start
    manifest = {
        "format": FORMAT,
        "source": str(source),
        "kind": src.kind,
        "description": src.description,
        "encoder": choice.name,
        "rows": written.rows,
        "dim": written.dim,
        "id": "id column of the shards; row i of the shards (and of map.parquet) and id i of the index are one item",
        "metadata_columns": written.meta_columns,
        "shards": written.shards,
        "projector": {"vectors": "vectors.tsv", "metadata": "metadata.tsv"} if projector else None,
        "index": index_info,
        "map": map_info,
        "skipped": written.skipped[:1000],
        "notes": src.notes,
        "ray": {"address": ray_address or "local", "workers": workers, "cpus_per_worker": cpus_per_worker,
                "gpus_per_worker": gpus_per_worker, "batch_size": batch_size, "nodes": nodes},
        "seconds": {"embed_and_write": round(t_embed, 3), "encoder_stage": t_stage and round(t_stage, 3),
                    "index": round(t_index, 3), "map": round(t_map, 3), "total": round(total, 3)},
        "items_per_second": round(written.rows / t_embed, 2),  # embedding and writing, the workers' start-up included
        # the encoder stage alone, from its first call to its last (start-up not included; Ray Data's stats)
        "items_per_second_encoder_stage": round((written.rows + len(written.skipped)) / t_stage, 2) if t_stage else None,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log(f"wrote {out}/ in {total:.1f} s; open it with: latent-atlas --data {out}/")
    return manifest


def stage_seconds(ds) -> float | None:
    """Wall time of the encoder stage by Ray Data's stats ("MapBatches(ImageEmbedder): … produced in 27.9s"):
    from its first call to its last, without the workers' start-up. None when the stats do not say."""
    try:
        text = ds.stats()
    except Exception:  # noqa: BLE001 - stats are a nicety
        return None
    found = re.findall(r"MapBatches\((?:ImageEmbedder|TextEmbedder)\):[^\n]*? in ([0-9.]+)s", text)
    return float(found[-1]) if found else None


def _unwrapped(batches):
    """Iterate, turning an InputError raised inside a Ray worker back into a plain InputError."""
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - Ray wraps a worker's error; find an InputError inside
            cause = unwrap_input_error(exc)
            if cause is not None:
                raise cause from None
            raise
        yield batch


def unwrap_input_error(exc: BaseException) -> InputError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, InputError):
            return InputError(str(exc).splitlines()[-1] if "\n" in str(exc) else str(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


__all__ = ["FORMAT", "MANIFEST", "ingest", "plan_resources", "ray_session", "unwrap_input_error"]
