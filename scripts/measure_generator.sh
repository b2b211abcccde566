#!/usr/bin/env bash
# Re-measure every README number that depends on the Shapes generator in assets/shapes/ (after a
# new model is shipped). Run with nothing else on the CPU; about 20 minutes on 2 cores.
#   bash scripts/measure_generator.sh [OUT_DIR]      (default runs/measure-<date>)
# Each step writes its output to OUT_DIR; the log says when each finished.
set -uo pipefail
cd "$(dirname "$0")/.."
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 PYTHONPATH="$PWD"
PY=.venv/bin/python
O=${1:-runs/measure-$(date +%Y%m%d-%H%M)}
mkdir -p "$O"
step() {  # step NAME COMMAND...: run, keep its output, note the time
  local name=$1; shift
  "$@" > "$O/$name.out" 2>&1
  echo "$name: exit $? at $(date +%H:%M:%S)" | tee -a "$O/measure.log"
}
echo "start $(date)" | tee "$O/measure.log"
# issue 3: text prompts (the model's guidance method and classifier-free), region maps
step eval_generator $PY -m backends.shapes.eval generator --json "$O/eval_generator.json"
# the same prompts read by the non-learned geometric scorer beside the judge (per shape and size)
step shape_scorers $PY scripts/compare_shape_scorers.py --n 500 --out-png "$O/square_disagreements.png"
step eval_generator_cfg $PY -m backends.shapes.eval_generator --regions 0 --guidance-method cfg --json "$O/eval_generator_cfg.json"
step bench_generator $PY bench/bench_generator.py --regions
step bench_regions $PY bench/bench_regions.py
# issue 17: painted areas as people paint them (recorded in generator.json, where the Regions tab reads them),
# then the silhouette protocol
step regions_user $PY -m backends.shapes.regions_eval --regions user --record --n 200 --guidance 3.5 --threads 2 \
  --methods spatext,spatext+plan,multidiffusion,multidiffusion+plan,paint_with_words,paint_with_words+plan,text --json "$O/regions_user.json"
# the same with the planner on a second suite of layouts (seed 1: not the one its settings were chosen on)
step regions_user_seed1 $PY -m backends.shapes.regions_eval --regions user --n 200 --seed 1 --guidance 3.5 --threads 2 --methods spatext,spatext+plan --json "$O/regions_user_seed1.json"
step regions_eval $PY -m backends.shapes.regions_eval --regions mask --n 200 --guidance 2.5 --threads 2 --json "$O/regions_eval.json"
step regions_eval_g4 $PY -m backends.shapes.regions_eval --regions mask --n 200 --guidance 4 --methods spatext --threads 2 --json "$O/regions_eval_g4.json"
# issue 17: two objects from one prompt, from the words alone and laid out first (the Generate tab's default)
step two_objects $PY -m backends.shapes.two_objects_eval --n 200 --threads 2 --json "$O/two_objects.json"
# issue 4: the Directions bars (non-strict xfails that print their numbers), inversion, speed
step directions_bars $PY -m pytest -q -s -rxX -p no:cacheprovider tests/test_directions.py -k "top10_pca or supervised_colour"
step inversion env OMP_NUM_THREADS=1 $PY -m pytest -q -s -p no:cacheprovider tests/test_hspace.py -k inversion_psnr
step bench_directions $PY bench/bench_directions.py
# issue 22: PCA, Jacobian and NoiseCLR directions judged, and the disentanglement table, on this model
step eval_directions $PY scripts/eval_directions.py --threads 2 --json "$O/eval_directions.json"
# issue 17: what the tab's supervised directions do (recorded in generator.json, where the Directions tab reads it)
step supervised_directions $PY -m backends.shapes.supervised_eval --record --json "$O/supervised_directions.json"
echo "done $(date)" | tee -a "$O/measure.log"
