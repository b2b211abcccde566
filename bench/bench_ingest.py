"""Ingestion throughput (python -m backends.ingest) of N Shapes images with 1 and with 2 Ray workers, and the ratio.

    python bench/bench_ingest.py [--n 2000] [--encoder shapes-cnn] [--cpus 2] [--repeats 1]

N 64×64 Shapes scenes are written as PNG files; each setting ingests the folder on the same local
Ray (--cpus CPUs) with --workers 1 and then 2, map off (the map is not parallel work). Two rates per
run, in items/s: the whole embed-and-write stage (reading, decoding, thumbnails, encoder, Parquet +
TSV; the workers' start-up, which loads the encoder, included), and the encoder stage alone (from
its first call to its last, by Ray Data's stats: the parallel part). The ratio is 2 workers' rate
over 1 worker's. With other work on the cores the ratio falls below 2; the 1- and 2-worker runs
alternate when --repeats > 1. For scale, the same work without Ray: the worker class called in a
loop in one process on one thread.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import Timer


def write_images(folder: Path, n: int) -> None:
    from PIL import Image

    from backends.shapes.scenes import make_batch

    folder.mkdir(parents=True)
    for s in range(0, n, 1000):
        b = make_batch(min(1000, n - s), seed=100 + s, size=64, single=False)
        for i, im in enumerate(b.images):
            Image.fromarray(im).save(folder / f"scene-{s + i:06d}.png")


def plain_loop(folder: Path, encoder: str, batch_size: int, n: int = 1000) -> float:
    """items/s of the same read-decode-thumbnail-embed work without Ray (first n images)."""
    import pyarrow as pa
    import torch

    from backends.ingest.embed import ImageEmbedder, choose_encoder
    from backends.ingest.sources import open_source

    torch.set_num_threads(1)
    items = open_source(str(folder)).items[:n]
    worker = ImageEmbedder(choose_encoder("images", encoder).name)
    table = pa.Table.from_pylist(items)
    worker(table.slice(0, min(8, len(items))))  # warm-up
    with Timer() as t:
        for s in range(0, len(items), batch_size):
            worker(table.slice(s, batch_size))
    return len(items) / t.s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--encoder", default="shapes-cnn", help="e.g. openclip:ViT-B-32/none (random weights, no download)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    import ray

    from backends.ingest import ingest

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        with Timer() as tw:
            write_images(tmp / "images", args.n)
        print(f"data: {args.n:,} Shapes scenes, 64×64 PNG ({tw.s:.1f} s to write); encoder {args.encoder}; "
              f"local Ray with {args.cpus} CPUs; batch {args.batch_size}")
        plain = plain_loop(tmp / "images", args.encoder, args.batch_size)
        print(f"  no Ray, one process, one torch thread: {plain:,.1f} items/s (the worker class called in a loop, "
              "encoder already loaded)")
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        rates: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
        for r in range(args.repeats):
            for workers in (1, 2):
                out = tmp / f"out-{workers}-{r}"
                m = ingest(str(tmp / "images"), str(out), encoder=args.encoder, workers=workers,
                           batch_size=args.batch_size, make_map=False, quiet=True)
                whole, stage = m["items_per_second"], m["items_per_second_encoder_stage"]
                rates[workers].append((whole, stage))
                print(f"  {workers} worker(s), run {r + 1}: {whole:,.1f} items/s embed+write "
                      f"({m['seconds']['embed_and_write']:.1f} s), encoder stage {stage:,.1f} items/s "
                      f"({m['seconds']['encoder_stage']:.1f} s); index {m['seconds']['index']:.1f} s")
                shutil.rmtree(out)
        ray.shutdown()
        for k, what in ((0, "embed+write, start-up included"), (1, "encoder stage")):
            one = sum(x[k] for x in rates[1]) / len(rates[1])
            two = sum(x[k] for x in rates[2]) / len(rates[2])
            print(f"{what}: 1 worker {one:,.1f} items/s, 2 workers {two:,.1f} items/s → ratio {two / one:.2f}×")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
