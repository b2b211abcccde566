#!/usr/bin/env bash
# Create .venv and install Latent Atlas (idempotent). Usage: scripts/setup.sh [app|test]
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-app}"
PY="${PYTHON:-python3}"
req=requirements.txt
[ "$mode" = test ] && req=requirements-test.txt
hashes=""
if [ "${LATENT_ATLAS_LOCKED:-0}" = 1 ]; then  # the exact, hash-checked set of requirements.lock
  req=requirements.lock; hashes="--require-hashes"
fi
stamp=".venv/.installed-$(sha256sum requirements.txt requirements-test.txt | sha256sum | cut -c1-16)-$mode${hashes:+-locked}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --disable-pip-version-check -q $hashes -r "$req"
  touch "$stamp"
fi
if [ "$mode" = test ] && [ ! -x /usr/bin/chromium ]; then
  # The browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
