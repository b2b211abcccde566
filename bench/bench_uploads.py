"""Upload loaders on wide CSVs (issue #20 item 1) against pandas.read_csv of the same file.

    python bench/bench_uploads.py [--repeat 3] [--skip-6m] [--baseline REV]

Cases:
  * a 1 MB numeric CSV with 1,000 columns: `load_path` time and its ratio to `pd.read_csv` of the
    same file. Target: ≤ 2 s.
  * the same shape at 10,000 columns (a 10 MB file).
  * the issue's shape: thousands of columns, 3 rows, text cells between the numbers (about
    200 kB and 1 MB; before issue #20 these took 15.7 s and 35.5 s).
  * a 65 MB CSV with 6 million columns: refused, with a message naming the column limit.
    Target: ≤ 5 s (it held a worker over 16 minutes and 8.3 GB before issue #20).

--baseline REV also times backends/corpora/loaders.py as it was at git revision REV (e.g. the commit
before issue #20) on the same files, except the 6-million-column one.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import Timer  # noqa: F401  (also puts the repository on sys.path)

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def numeric_csv(path: Path, n_rows: int, n_cols: int, *, seed: int = 0) -> Path:
    """A header row c0..c{n-1} and n_rows rows of 6-decimal floats."""
    x = np.random.default_rng(seed).normal(size=(n_rows, n_cols))
    header = ",".join(f"c{j}" for j in range(n_cols))
    body = "\n".join(",".join(f"{v:.6f}" for v in row) for row in x)
    path.write_text(header + "\n" + body + "\n")
    return path


def mixed_csv(path: Path, n_cols: int, n_rows: int = 3, *, seed: int = 0) -> Path:
    """The issue's shape: a numeric column, then a text column, and so on; a few rows."""
    rng = np.random.default_rng(seed)
    rows = [",".join(f"t{i}" if j % 2 else f"{rng.normal():.2f}" for j in range(n_cols)) for i in range(n_rows)]
    path.write_text(",".join(f"c{j}" for j in range(n_cols)) + "\n" + "\n".join(rows) + "\n")
    return path


def wide_6m_csv(path: Path, n_cols: int = 6_000_000) -> Path:
    """About 65 MB: one line of 6 million short names, one line of 6 million values."""
    with open(path, "wb") as f:
        f.write(b"feature," * (n_cols - 1) + b"feature\n")  # 8 bytes a column: 48 MB
        f.write(b"0.1," * (n_cols - 1) + b"0.1\n")  # 4 bytes a column: 24 MB
    return path


def baseline_loader(rev: str):
    """backends/corpora/loaders.py at git revision `rev`, imported as a separate module."""
    src = subprocess.run(["git", "show", f"{rev}:backends/corpora/loaders.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "loaders_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("loaders_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median seconds over `repeat` runs, and the last result (or the InputError it raised)."""
    from backends.errors import InputError

    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        try:
            out = fn()
        except InputError as exc:
            out = exc
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def outcome(out) -> str:
    return f"→ {out.vectors.shape}" if hasattr(out, "vectors") else f"→ InputError: {str(out)[:90]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-6m", action="store_true", help="skip the 65 MB / 6M-column refusal")
    ap.add_argument("--baseline", help="also time the loaders of this git revision (e.g. 9852b6d)")
    args = ap.parse_args()

    import pandas as pd

    from backends.corpora.loaders import load_path

    old = baseline_loader(args.baseline) if args.baseline else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = [
            ("numeric, 1,000 columns", numeric_csv(tmp / "n1000.csv", 104, 1_000), 2.0),
            ("numeric, 10,000 columns", numeric_csv(tmp / "n10000.csv", 104, 10_000), None),
            ("issue shape, 16,000 columns", mixed_csv(tmp / "m16000.csv", 16_000), None),
            ("issue shape, 77,000 columns", mixed_csv(tmp / "m77000.csv", 77_000), None),
        ]
        for label, p, target in cases:
            size = p.stat().st_size
            t_pd, _ = timed(lambda p=p: pd.read_csv(p), args.repeat)
            t_new, out = timed(lambda p=p: load_path(p, max_bytes=200 * MB), args.repeat)
            verdict = "" if target is None else f" (target ≤ {target:g} s: {'PASS' if t_new <= target else 'FAIL'})"
            line = (f"{label} ({size / MB:.2f} MB): load_path {t_new:.3f} s{verdict}, pd.read_csv {t_pd:.3f} s, "
                    f"ratio {t_new / t_pd:.2f}×")
            if old is not None:
                t_old, _ = timed(lambda p=p: old.load_path(p, max_bytes=200 * MB), 1)
                line += f", before ({args.baseline}) {t_old:.3f} s, {t_old / t_new:.1f}× faster now"
            print(line, outcome(out), flush=True)
        if not args.skip_6m:
            p = wide_6m_csv(tmp / "wide6m.csv")
            t, out = timed(lambda: load_path(p, max_bytes=200 * MB), 1)
            print(f"6,000,000 columns ({p.stat().st_size / MB:.0f} MB): {t:.2f} s "
                  f"(target ≤ 5 s: {'PASS' if t <= 5 and not hasattr(out, 'vectors') else 'FAIL'}) {outcome(out)}")


if __name__ == "__main__":
    sys.exit(main())
