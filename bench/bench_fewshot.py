"""Few-shot labelling: label spreading, seeded k-means and OpTA (BECLR) on one table (issue #22).

    python bench/bench_fewshot.py [--corpora digits,shapes] [--shots 1,5] [--seeds 5]

Accuracy on the unlabelled items, mean over seeds (a seed draws which items are labelled),
with the corpus's label column ("label" for digits, "shape" for the Shapes scenes).
"""
import argparse

import numpy as np
from common import embedding_like  # noqa: F401  (bench/common.py puts the repo on sys.path)

LABEL = {"digits": "label", "shapes": "shape"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpora", default="digits,shapes")
    ap.add_argument("--shots", default="1,5")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    from backends.clusters.clustering import PROPAGATION, propagate_labels, propagation_accuracy, sample_labelled
    from backends.corpora.corpus import load_corpus

    print("| corpus | labels a class | " + " | ".join(PROPAGATION) + " |")
    print("|---|---|" + "---|" * len(PROPAGATION))
    for name in args.corpora.split(","):
        c = load_corpus(name)
        truth = c.meta[LABEL.get(name, "label")].astype(str).to_numpy()
        for shots in (int(s) for s in args.shots.split(",")):
            row = []
            for m in PROPAGATION:
                accs = []
                for seed in range(args.seeds):
                    lab = sample_labelled(truth, shots, seed=seed)
                    res = propagate_labels(c.vectors, lab, truth[lab], method=m, seed=seed)
                    accs.append(propagation_accuracy(res["pred"], truth, lab))
                row.append(f"{np.mean(accs):.3f} ± {np.std(accs):.3f}")
            print(f"| {name} ({len(c):,}) | {shots} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
