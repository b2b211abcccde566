"""The Stitching numbers of the README on the Shapes world's two encoders.

    python -m backends.shapes.stitching_eval [--anchors 300] [--seed 0]

A = shapes-cnn, B = shapes-vit over the Shapes stitching world (held-out single-object scenes,
train / test split); prints absolute / relative / Procrustes similarity of the two spaces, the
zero-shot stitching table per label (encoder → head) and the decoders' pixel MSE.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backends.shapes.stitching_eval")
    p.add_argument("--anchors", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    from backends.representations import relative as rel
    from backends.representations import stitching as st

    torch.set_num_threads(args.threads)
    pair = st.load_pair("shapes-cnn", "shapes-vit")
    anchors = st.pair_anchors(pair, args.anchors, strategy="random", seed=args.seed)
    m = rel.compare(pair.x_a, pair.x_b, anchors, k=10)
    print("metric: absolute / relative / procrustes")
    for k in ("jaccard", "mrr", "cosine", "cka"):
        print(f"  {k:8s}", " / ".join(f"{m[w][k]:.3f}" for w in ("absolute", "relative", "procrustes")))
    for label in ("shape", "colour", "size", "position"):
        s = st.prepare(pair, anchors, label)
        print(f"{label} (chance {st.chance_accuracy(pair, label):.3f}): encoder -> head, absolute / relative / procrustes")
        for r in st.stitching_table(s):
            print(f"  {r['encoder']} -> {r['head']}: {r['absolute']:.3f} / {r['relative']:.3f} / {r['procrustes']:.3f}")
    s = st.prepare(pair, anchors, "shape")
    for which in ("A", "B"):
        st.prepare_decoder(s, which)
    err = {f"{e}->{d}": st.decoding_error(s, encoder=e, decoder=d) for e in "AB" for d in "AB"}
    te = pair.test
    mean_img = pair.images[pair.train].astype(np.float32).mean(0) / 255
    err["mean image"] = float(np.mean((pair.images[te].astype(np.float32) / 255 - mean_img) ** 2))
    print("decoder pixel MSE (encoder->decoder):", ", ".join(f"{k} {v:.4f}" for k, v in err.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
