#!/usr/bin/env bash
# Rebuild app/static/regl-scatterplot.min.js (the WebGL map for large corpora, app/components/scatter_gl.py)
# and app/static/LICENSES-regl-scatterplot.txt from the npm registry. The bundle is committed, so the app
# and its tests never need npm; run this only to change the version. Needs node >= 18 and npm.
#
#   scripts/build_regl_scatterplot.sh            # writes into app/static/
set -euo pipefail

REGL_SCATTERPLOT=1.16.0
REGL=2.1.1
PUB_SUB_ES=3.0.0
ESBUILD=0.28.2

here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/app/static"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --save-exact \
  "regl-scatterplot@$REGL_SCATTERPLOT" "regl@$REGL" "pub-sub-es@$PUB_SUB_ES" "esbuild@$ESBUILD" >/dev/null
cat > entry.js <<'EOF'
import createScatterplot, { createRenderer } from 'regl-scatterplot';
window.createScatterplot = createScatterplot;
window.createScatterplotRenderer = createRenderer;
EOF
./node_modules/.bin/esbuild entry.js --bundle --format=iife --minify --target=es2020 --legal-comments=none \
  --banner:js="/*! regl-scatterplot $REGL_SCATTERPLOT + regl $REGL + pub-sub-es $PUB_SUB_ES, bundled with esbuild $ESBUILD (MIT and ISC licences: LICENSES-regl-scatterplot.txt) */" \
  --outfile="$out/regl-scatterplot.min.js"

# The licences of every package whose code is in the bundle: regl and pub-sub-es (imported), and the packages
# regl-scatterplot's own dist file inlines (its imports are only regl and pub-sub-es; kdbush is vendored in
# its source, and its line shader is Matt DesLauriers's).
{
  echo "Licences of the code in regl-scatterplot.min.js (built by scripts/build_regl_scatterplot.sh)."
  for pkg in regl-scatterplot regl pub-sub-es @flekschas/utils dom-2d-camera camera-2d-simple gl-matrix regl-line earcut; do
    dir="node_modules/$pkg"
    version="$(node -p "require('./$dir/package.json').version")"
    licence="$(node -p "require('./$dir/package.json').license")"
    file="$(ls "$dir" | grep -i -E '^licen[cs]e' | head -1)"
    printf '\n==============================================================================\n'
    printf '%s %s (%s), https://www.npmjs.com/package/%s\n' "$pkg" "$version" "$licence" "$pkg"
    printf -- '------------------------------------------------------------------------------\n'
    cat "$dir/$file"
    echo
  done
  cat <<'EOF'

==============================================================================
kdbush (vendored in regl-scatterplot's source, ISC), https://github.com/mourner/kdbush
------------------------------------------------------------------------------
ISC License

Copyright (c) 2018, Vladimir Agafonkin

Permission to use, copy, modify, and/or distribute this software for any purpose
with or without fee is hereby granted, provided that the above copyright notice
and this permission notice appear in all copies.

THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES WITH
REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND
FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR ANY SPECIAL, DIRECT,
INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES WHATSOEVER RESULTING FROM LOSS
OF USE, DATA OR PROFITS, WHETHER IN AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER
TORTIOUS ACTION, ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF
THIS SOFTWARE.

==============================================================================
Line vertex shader in regl-scatterplot (from https://mattdesl.svbtle.com/drawing-lines-is-hard)
------------------------------------------------------------------------------
The MIT License (MIT) Copyright (c) 2015 Matt DesLauriers
EOF
} > "$out/LICENSES-regl-scatterplot.txt"

sha256sum "$out/regl-scatterplot.min.js"
