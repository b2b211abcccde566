#!/usr/bin/env bash
# On the device machine (the `run` tool, carry [".device"]; run scripts/pack_device.sh here first):
# train the Shapes generator on the GPU and leave the exported weights and the log in $OUT.
#   bash scripts/device_train_generator.sh STEPS BATCH [more `train generator` flags]
# e.g. STEPS=20000 BATCH=256. DEVICE=cpu (with --small) runs the same path on a CPU, as a rehearsal.
# $OUT comes back with at most 8 files, 16 MiB each: the fp16 export and its guide fit; the
# full checkpoint (fp32 model, EMA and optimiser) does not, so a run cannot be resumed here.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:?STEPS}; batch=${2:?BATCH}; shift 2
OUT=${OUT:-/tmp/la-device-out}
mkdir -p "$OUT/gen"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/la-site .device/wheels/*.whl
export PYTHONPATH="/tmp/la-site:$PWD" LATENT_ATLAS_MINILM_DIR="$PWD/.device/minilm" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
bf16=(); [ "${DEVICE:-cuda}" = cuda ] && bf16=(--bf16)
python3 -m backends.shapes.train generator --device "${DEVICE:-cuda}" "${bf16[@]}" --steps "$steps" --batch "$batch" \
  --threads "${THREADS:-8}" --out "$OUT/gen" --no-progress "$@" 2>&1 | tee "$OUT/train.log"
cp "$OUT/gen/runs/generator/log.jsonl" "$OUT/log.jsonl"
ls -la "$OUT" "$OUT/gen"
