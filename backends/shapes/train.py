"""Train the Shapes world's models.

    python -m backends.shapes.train <judge|encoders|generator|all> [--steps N] [--out DIR] [--resume] [--seed S]

Each model has its own trainer, ``backends.shapes.train_<name>.main(argv)``, which takes the same
flags. Trainers use a fixed seed, show a tqdm progress bar, write resumable checkpoints
(safetensors + JSON state) and a JSONL log of metrics under runs/<model>/, and put the final
weights under assets/shapes/ (or --out).

The helpers below (``RunDir``) are shared by the trainers.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from backends.paths import assets_dir

MODELS = ("judge", "encoders", "generator")
REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "runs"
ASSETS = assets_dir() / "shapes"


def common_parser(prog: str, *, steps: int, batch: int | None = None) -> argparse.ArgumentParser:
    """The flags every trainer accepts."""
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--steps", type=int, default=steps, help=f"optimiser steps (default {steps})")
    p.add_argument("--out", type=Path, default=ASSETS, help="where the final weights go (default assets/shapes)")
    p.add_argument("--runs", type=Path, default=None, help="checkpoints and logs (default runs/<model>, or <out>/runs when --out is given)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--no-progress", action="store_true")
    if batch is not None:
        p.add_argument("--batch", type=int, default=batch)
    return p


class RunDir:
    """runs/<model>/: checkpoint.safetensors + checkpoint.json (step, optimiser state ...) and log.jsonl."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.log_path = self.path / "log.jsonl"
        self.t0 = time.time()

    def log(self, step: int, **metrics) -> None:
        rec = {"step": step, "time_s": round(time.time() - self.t0, 2), **metrics}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def save(self, step: int, tensors: dict, state: dict) -> None:
        """Atomically write a checkpoint. tensors: name -> torch.Tensor (model and optimiser)."""
        from safetensors.torch import save_file

        tmp = self.path / "checkpoint.tmp.safetensors"
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        tmp.replace(self.path / "checkpoint.safetensors")
        (self.path / "checkpoint.json").write_text(json.dumps({"step": step, "elapsed_s": self.elapsed(), **state}))

    def load(self):
        """(step, tensors, state) of the last checkpoint, or None."""
        from safetensors.torch import load_file

        w, j = self.path / "checkpoint.safetensors", self.path / "checkpoint.json"
        if not (w.exists() and j.exists()):
            return None
        state = json.loads(j.read_text())
        self.t0 = time.time() - state.get("elapsed_s", 0.0)
        return state["step"], load_file(str(w)), state

    def elapsed(self) -> float:
        return round(time.time() - self.t0, 2)


def optimizer_tensors(opt, prefix: str = "opt.") -> tuple[dict, dict]:
    """Split a torch optimiser state_dict into tensors (for safetensors) and JSON-able rest."""
    import torch

    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt, tensors: dict, meta: dict, prefix: str = "opt.") -> None:
    state: dict = {}
    for name, v in tensors.items():
        if not name.startswith(prefix):
            continue
        pid, k = name[len(prefix):].split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def progress(total: int, initial: int, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=disable, dynamic_ncols=True, mininterval=2.0)


def run_dir_for(args, model: str) -> RunDir:
    if args.runs is not None:
        return RunDir(args.runs)
    if Path(args.out).resolve() != ASSETS.resolve():
        return RunDir(Path(args.out) / "runs" / model)
    return RunDir(RUNS / model)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    what, rest = argv[0], argv[1:]
    if what not in MODELS + ("all",):
        print(f"Unknown model: {what!r}. Must be one of: {', '.join(MODELS + ('all',))}", file=sys.stderr)
        return 2
    for name in (MODELS if what == "all" else (what,)):
        try:
            mod = importlib.import_module(f"backends.shapes.train_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"backends.shapes.train_{name}":
                print(f"no trainer for {name!r} yet (backends/shapes/train_{name}.py is missing)", file=sys.stderr)
                if what != "all":
                    return 2
                continue
            raise
        rc = mod.main(rest)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
