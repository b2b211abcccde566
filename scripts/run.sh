#!/usr/bin/env bash
# Set up (first time) and run Latent Atlas on the embedded default at http://127.0.0.1:7860
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh app
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
exec .venv/bin/python launch.py "$@"
