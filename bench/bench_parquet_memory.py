"""Peak memory of loading a Parquet upload (issue #21 item 2): 200,000 × 384 float32 by default.

    python bench/bench_parquet_memory.py [--n 200000] [--dim 384] [--layouts list,fixed,columns,npy]
                                         [--baseline REV]

Each layout is written once to a temporary folder, then loaded by `load_path` in a fresh Python
process that first imports numpy, pandas, pyarrow and the loaders (so their memory is the baseline).
The child reports its peak resident set (`resource.getrusage(...).ru_maxrss`) before and after the
load. Printed per layout: the peak, the baseline, and two ratios to the vectors' own bytes
(N × D × 4): the whole peak, and the peak above the baseline (what the load itself took).

Layouts: "list" (a list<float32> column "embedding" + an id and a label column), "fixed" (the same
as fixed_size_list<float32, D>), "columns" (D float32 columns + a label column), "npy" (a float32
.npy file).

--baseline REV also loads every file with backends/ as it was at git revision REV (exported with
`git archive` to a temporary folder), in the same way, for a before / after comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import numpy, pandas, pyarrow, pyarrow.parquet  # noqa: F401  (in the baseline)
from backends.corpora import loaders
from backends.corpora.limits import UploadLimits
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
base = peak()
t0 = time.perf_counter()
c = loaders.load_path(sys.argv[2], max_bytes=1 << 40, scaling="auto",
                      limits=UploadLimits(max_cells=2_000_000_000, max_parse_memory=1 << 40, max_parse_seconds=3600))
s = time.perf_counter() - t0
v = c.vectors
print(json.dumps({"base": base, "peak": peak(), "seconds": s, "shape": list(v.shape), "dtype": str(v.dtype),
                  "checksum": float(numpy.asarray(v[:: max(1, len(v) // 1000)], numpy.float64).sum())}))
"""


def make_files(folder: Path, n: int, d: int, layouts: list[str]) -> dict[str, Path]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    ids = pa.array([f"row-{i}" for i in range(n)])
    labels = pa.array((np.arange(n) % 10).astype(np.int64))
    out = {}
    for layout in layouts:
        p = folder / f"{layout}.{'npy' if layout == 'npy' else 'parquet'}"
        if layout == "npy":
            np.save(p, x)
        elif layout in ("list", "fixed"):
            flat = pa.array(x.reshape(-1))
            col = (pa.FixedSizeListArray.from_arrays(flat, d) if layout == "fixed"
                   else pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), flat))
            pq.write_table(pa.table({"id": ids, "embedding": col, "label": labels}), p)
        elif layout == "columns":
            cols = {f"f{j}": x[:, j] for j in range(d)}
            cols["label"] = labels
            pq.write_table(pa.table(cols), p)
        else:
            raise SystemExit(f"unknown layout {layout!r}")
        out[layout] = p
    return out


def export_tree(rev: str) -> Path:
    """backends/ at git revision `rev`, in a temporary folder (for the child's sys.path)."""
    dest = Path(tempfile.mkdtemp(prefix="parquet-mem-baseline-"))
    archive = subprocess.run(["git", "archive", rev, "backends"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def measure(tree: Path, path: Path) -> dict:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(path)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--layouts", default="list,fixed,columns,npy")
    ap.add_argument("--baseline", default=None, help="also load with backends/ at this git revision")
    ap.add_argument("--make", default=None, help=argparse.SUPPRESS)  # internal: write the files into this folder
    a = ap.parse_args()
    layouts = [s.strip() for s in a.layouts.split(",") if s.strip()]
    if a.make:
        make_files(Path(a.make), a.n, a.dim, layouts)
        return
    vec_bytes = a.n * a.dim * 4
    trees = [("now", ROOT)] + ([(a.baseline, export_tree(a.baseline))] if a.baseline else [])
    with tempfile.TemporaryDirectory(prefix="parquet-mem-") as tmp:
        # written by a child process: Linux carries a process's peak RSS across fork + exec, so this
        # process stays small for the children that measure
        subprocess.run([sys.executable, __file__, "--make", tmp, "--n", str(a.n), "--dim", str(a.dim),
                        "--layouts", ",".join(layouts)], check=True)
        files = {layout: Path(tmp) / f"{layout}.{'npy' if layout == 'npy' else 'parquet'}" for layout in layouts}
        print(f"{a.n:,} x {a.dim} float32: vectors {vec_bytes / MB:.0f} MB")
        print(f"{'layout':8} {'tree':10} {'file MB':>8} {'peak MB':>8} {'base MB':>8} {'peak/vec':>9} "
              f"{'(peak-base)/vec':>16} {'s':>6}  result")
        for layout, path in files.items():
            for label, tree in trees:
                m = measure(tree, path)
                size = path.stat().st_size / MB
                if "error" in m:
                    print(f"{layout:8} {label[:10]:10} {size:8.0f}  failed: {m['error'][:120]}")
                    continue
                print(f"{layout:8} {label[:10]:10} {size:8.0f} {m['peak'] / MB:8.0f} {m['base'] / MB:8.0f} "
                      f"{m['peak'] / vec_bytes:9.2f} {(m['peak'] - m['base']) / vec_bytes:16.2f} "
                      f"{m['seconds']:6.1f}  {tuple(m['shape'])} {m['dtype']} checksum {m['checksum']:.4f}")


if __name__ == "__main__":
    main()
