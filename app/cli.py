"""The `latent-atlas [FILE ...] [flags]` command (pyproject [project.scripts]); `python launch.py` runs the same main().

FILE arguments are user corpora opened exactly like `--data FILE` (both may be given; the positional ones come after
the --data ones). `--help` answers without importing torch, gradio or any model code: keep imports here lazy.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

PROG = "latent-atlas"


def parse_args(argv: list[str] | None = None, prog: str = PROG) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Latent Atlas: explore the latent spaces of generative models in a browser.",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="user corpora to open, as with --data")
    p.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1, or $GRADIO_SERVER_NAME)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860, or $PORT / $GRADIO_SERVER_PORT)")
    p.add_argument("--share", action="store_true", help="create a public Gradio share link")
    p.add_argument("--data", action="append", default=None, metavar="PATH",
                   help="a user corpus to open (npy, parquet, csv, vectors.tsv, zip or folder of images); repeatable")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="where models and FAISS run (default auto: GPU when present)")
    p.add_argument("--cache-dir", default=None, help="where computed projections and indexes are kept "
                   "(default ~/.cache/latent-atlas, or $LATENT_ATLAS_CACHE)")
    p.add_argument("--corpus", default=None, help="corpus shown first (default digits)")
    p.add_argument("--max-upload-mb", type=int, default=None, help="largest accepted upload in MB (default 200)")
    p.add_argument("--no-warm-up", action="store_true",
                   help="do not compute the bundled corpora's maps in the background after the start (default: do, "
                        "so the first visitor finds them cached)")
    m = p.add_argument_group("model backends (README: Backends)")
    m.add_argument("--generator", default=None, metavar="NAME",
                   help="shapes (default) | sd15 | sd21 | sd-turbo | sdxl-turbo | <hub id> | <local diffusers folder>; "
                        "$LATENT_ATLAS_GENERATOR")
    m.add_argument("--encoder", default=None, metavar="NAME",
                   help="image encoder: shapes (default) | shapes-vit | openclip:<arch>/<pretrained> | <local open_clip "
                        "folder>; $LATENT_ATLAS_ENCODER")
    m.add_argument("--text-encoder", default=None, choices=["auto", "minilm"],
                   help="encoder of free-text goals in the Clusters tab: auto (the --encoder's text tower) or minilm")
    net = m.add_mutually_exclusive_group()
    net.add_argument("--download", action="store_true", default=None,
                     help="allow fetching hub models (default: only the local Hugging Face cache and folders)")
    net.add_argument("--offline", action="store_true",
                     help="never touch the network (the default; sets HF_HUB_OFFLINE=1)")
    m.add_argument("--attention-slicing", action="store_true", default=None, help="lower GPU memory, a little slower")
    m.add_argument("--cpu-offload", action="store_true", default=None,
                   help="keep text encoders and VAE on the CPU between calls (lower GPU memory)")
    args = p.parse_intermixed_args(argv)  # FILEs may stand before, between or after the flags
    if args.files:
        args.data = (args.data or []) + args.files
    return args


def _log_to_stderr() -> None:
    """The app's own log lines (user errors, refused sign-ins) on stderr, one line each; other
    libraries keep their levels."""
    import logging

    log = logging.getLogger("latent_atlas")
    if not log.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(h)
        log.setLevel(logging.INFO)


def main(argv: list[str] | None = None, prog: str = PROG) -> None:
    args = parse_args(argv, prog)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    _log_to_stderr()

    from backends.settings import Settings  # light: no torch, no gradio

    try:
        settings = Settings.from_env(
            host=args.host, port=args.port, share=args.share or None, data=args.data,
            device=args.device, cache_dir=args.cache_dir, default_corpus=args.corpus,
            max_upload_mb=args.max_upload_mb, generator=args.generator, encoder=args.encoder,
            text_encoder=args.text_encoder, download=(False if args.offline else args.download),
            attention_slicing=args.attention_slicing, cpu_offload=args.cpu_offload,
        )
    except ValueError as exc:  # a bad flag or environment value: one line, no traceback
        raise SystemExit(f"{prog}: {exc}") from None
    if importlib.util.find_spec("faiss") is None:  # pip install latent-atlas without the [cpu] or [gpu] extra
        raise SystemExit(f"{prog}: FAISS is not installed: pip install 'latent-atlas[cpu]' "
                         "(or 'latent-atlas[gpu]' on a CUDA 12 machine, without faiss-cpu)")
    if not settings.download:  # set before any Hugging Face library is imported (they read it once)
        os.environ["HF_HUB_OFFLINE"] = "1"  # a hub model must already be here: no hang on a download
    from app.main import create_app, launch_kwargs
    from backends.registry import Backends

    backends = Backends(settings)
    for path in settings.data:
        try:
            key = backends.add_path(path, operator=True)  # the operator's file: the memory budget decides its size
            print(f"loaded {path} as {key}", flush=True)
        except Exception as exc:  # a bad --data file is reported (here and on the page), the app still starts
            print(f"could not load --data {path}: {exc}", file=sys.stderr, flush=True)
            backends.add_note(f"--data {Path(path).name} was not opened: {exc}")
    for note in backends.model_notes():
        print(note, file=sys.stderr, flush=True)
    demo = create_app(settings, backends)
    if not args.no_warm_up:  # the bundled corpora's maps, thumbnails and indexes, in the background
        backends.warm_up()
    demo.launch(**launch_kwargs(settings))


if __name__ == "__main__":
    main()
