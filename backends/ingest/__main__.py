"""python -m backends.ingest SOURCE OUT [--encoder E] [--ray-address A] [--workers N] …

Exit status: 0 done, 2 bad input (one line on stderr: "error: …"), 1 anything else.
"""
from __future__ import annotations

import argparse
import sys

DESCRIPTION = """Embed SOURCE on Ray Data and write OUT: Parquet shards (id, vector, metadata, thumbnail), a FAISS
index and a 2-D map, which `latent-atlas --data OUT/` opens (thumbnails, map and index included).
SOURCE: a folder or .zip of images, a Parquet file or folder of Parquet shards (a vector column, kept as it is;
or a text column, embedded), or hspace:N[:STEP] (h of N generated samples)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backends.ingest", description=DESCRIPTION)
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("out", metavar="OUT", help="folder to create (or an earlier ingest, with --overwrite)")
    p.add_argument("--encoder", default=None,
                   help="images: shapes-cnn | shapes-vit | openclip:<arch>/<pretrained> | an OpenCLIP folder "
                        "(default: the app's, LATENT_ATLAS_ENCODER or shapes); text: minilm (default) or an image "
                        "encoder's text tower; not for vectors")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="join a running Ray cluster (auto, ray://head:10001, host:6379); default: start Ray "
                        "locally on this machine")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="encoder actors in the pool (default 2)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="items per encoder call (default 64)")
    p.add_argument("--shard-rows", type=int, default=10_000, metavar="N", help="rows per Parquet shard (default 10000)")
    p.add_argument("--map", dest="make_map", action=argparse.BooleanOptionalAction, default=True,
                   help="write the 2-D map (map.parquet; default: yes)")
    p.add_argument("--map-method", choices=("umap", "pca"), default="umap")
    p.add_argument("--index", choices=("auto", "flat", "ivf"), default="auto",
                   help="FAISS index: exact below 50,000 rows, IVF above (auto)")
    p.add_argument("--projector", action="store_true",
                   help="also write vectors.tsv + metadata.tsv for TensorFlow's Embedding Projector (the app does "
                        "not need them)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it holds an earlier ingest")
    p.add_argument("--num-cpus", type=int, default=None, metavar="N", help="CPUs of a local Ray (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from backends.errors import InputError
    from backends.ingest.pipeline import ingest

    try:
        ingest(args.source, args.out, encoder=args.encoder, ray_address=args.ray_address, workers=args.workers,
               batch_size=args.batch_size, shard_rows=args.shard_rows, make_map=args.make_map,
               map_method=args.map_method, index=args.index, overwrite=args.overwrite, num_cpus=args.num_cpus,
               quiet=args.quiet, projector=args.projector)
    except InputError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
