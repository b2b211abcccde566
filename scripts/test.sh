#!/usr/bin/env bash
# Set up (first time) and run the whole test suite: unit, app (gradio_client) and browser (Playwright + Chromium).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test || exit 1
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
.venv/bin/python -m pytest -q -p no:cacheprovider --timeout=900 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit 5): nothing to run with these arguments"; exit 0
fi
exit "$rc"
