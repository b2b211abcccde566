"""The map for large corpora: regl-scatterplot (WebGL) in the same gr.HTML as the Plotly map.

Plotly's map (app/components/scatter.py) sends every point as JSON (x, y, id, hover text: about 60
bytes a point, 6 MB at 100,000 points) and selects with SVG lasso paths; at a million points its
payload is ~60 MB of JSON and the page stalls. Above `GL_THRESHOLD` points a map is drawn by
regl-scatterplot instead (app/static/regl-scatterplot.min.js, bundled once, see app/static/README.md):

- The component's value stays a few hundred bytes whatever N: it names a content-addressed binary
  file, `<MapFiles root>/<key>.bin` = float32 x[n], float32 y[n] (normalised to [-0.95, 0.95],
  aspect kept) and, when the map is coloured, uint16 z[n] (a category code, or a number scaled
  to 0..65535): 8 to 10 bytes a point. The page fetches it from `/gradio_api/file=` (the folder is
  a Gradio static path, like the thumbnails) and draws it.
- Hover: the tooltip text comes on demand from chunks of `TIP_CHUNK` items (JSON lists of strings,
  `<root>/tips-<key>/<c>.json`, written once per corpus; maps of at most 50,000 points fetch every chunk
  once drawn); the thumbnail from the same URL template as the Plotly map. No Python round trip. The page
  picks the point under the mouse itself (a grid over the float32 x, y it already has) and draws no frame
  for a hover: a frame of a million points takes 1-2 s of the main thread in software WebGL, and the
  fetched chunk used to wait for it.
- Lasso, box (mode buttons above the map; shift-drag lassos in pan mode) and a click trigger the same
  events as the Plotly map: `points_selected` with the indices (a list, or for selections larger than
  n/32 a base64 bitmask, see `indices_from_event`) and `point_click` with {"index"}. A double click or
  Escape clears the selection. The indices are regl-scatterplot's own (its events are synchronous: they
  go out before any frame); when frames are slow (software WebGL) the frame that shows the selection is
  held back up to a second so that Python's answer reaches the tables first.
- Search hits / the selection are regl-scatterplot's selected points (dark); the clicked item and its
  neighbours (`highlight`) are red rings on a 2-D canvas above the points, redrawn as the view moves.
- Categories get the app's colours (app/components/colours.py) and a legend; numbers a Viridis ramp
  with their range. Wheel zoom everywhere; drag pans in "Pan" mode.

Maps with at most GL_THRESHOLD points keep Plotly: its hover images, legend toggling, axes and
selection boxes are what the Atlas, Clusters, Stitching, Annotate and Directions browser tests drive,
and at that size its JSON (≤ 6 MB) is drawn 3.5–4.7 s after page load (bench/bench_map_1m.py). `scatter_map()` (app/components/scatter.py)
hosts both: a value made by `scatter_gl_payload` draws with regl, one made by `scatter_payload`
with Plotly, in the same element with the same events; `scatter_gl_map()` is that component.

Usage:

    files = MapFiles(cache_root / "maps")          # + gr.set_static_paths(static_paths(files.root))
    plot = scatter_gl_map(height=620, elem_id="m")
    value = scatter_gl_payload(xy, files=files, color=labels, hover=texts, tips_key=corpus_fingerprint)
    plot.points_selected(fn, ...)   # indices_from_event(evt._data) -> [int]
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

GL_THRESHOLD = int(os.environ.get("LATENT_ATLAS_GL_THRESHOLD", "100000"))  # maps with more points use regl
TIP_CHUNK = 4096  # tooltips per file fetched on hover
STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
BUNDLE = STATIC_DIR / "regl-scatterplot.min.js"
MAX_MAP_BYTES = 2 << 30  # the map files kept on disk (oldest first out)
RAMP_STEPS = 64


def static_paths(*extra: str | os.PathLike) -> list[str]:
    """Folders the app passes to gr.set_static_paths for the GL map: the bundle's and the map files'."""
    return [str(STATIC_DIR)] + [str(Path(p)) for p in extra]


def bundle_url() -> str:
    return f"/gradio_api/file={BUNDLE}"


def use_gl(n: int) -> bool:
    """Whether a map of n points is drawn with regl-scatterplot (else Plotly)."""
    return int(n) > GL_THRESHOLD


# ---------------------------------------------------------------------------------------
# Files the page fetches


class MapFiles:
    """A folder of content-addressed map files: `<key>.bin` (points) and `tips-<key>/<c>.json`.

    Names are SHA-256 prefixes of the content, so the same map is written once and a URL never
    changes meaning; the folder keeps `max_bytes`, the least recently used going first.
    """

    def __init__(self, root: str | os.PathLike, max_bytes: int = MAX_MAP_BYTES):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()

    def url(self, name: str) -> str:
        return f"/gradio_api/file={self.root / name}"

    def points(self, xy: np.ndarray, z: np.ndarray | None = None) -> tuple[str, int]:
        """Write the points' file (if new); returns (its URL, its size in bytes)."""
        from backends.cache import content_key

        xy = np.asarray(xy, dtype=np.float32)
        parts = [np.ascontiguousarray(xy[:, 0], dtype="<f4").tobytes(), np.ascontiguousarray(xy[:, 1], dtype="<f4").tobytes()]
        if z is not None:
            parts.append(np.ascontiguousarray(z, dtype="<u2").tobytes())
        blob = b"".join(parts)
        key = content_key(np.frombuffer(blob, dtype=np.uint8))
        path = self.root / f"{key}.bin"
        if path.exists():
            os.utime(path)
        else:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            self.prune()
        return self.url(path.name), len(blob)

    def tips(self, texts: Sequence[str] | Callable[[], Sequence[str]], key: str | None = None) -> str:
        """Write the tooltip chunks (once per key); returns the URL template with `{c}` for the chunk.

        `texts` may be a callable, called only when the chunks for `key` are not on disk yet."""
        from backends.cache import content_key

        if key is None:
            texts = list(texts() if callable(texts) else texts)
            key = content_key("\x1f".join(map(str, texts)))
        else:
            key = content_key("tips", key)
        d = self.root / f"tips-{key}"
        if (d / ".complete").exists():
            os.utime(d)
            return self.url(f"{d.name}/{{c}}.json")
        texts = list(texts() if callable(texts) else texts)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".tmp-tips-"))
        for c in range(0, max(len(texts), 1), TIP_CHUNK):
            chunk = [str(t)[:300] for t in texts[c:c + TIP_CHUNK]]
            (tmp / f"{c // TIP_CHUNK}.json").write_text(json.dumps(chunk, ensure_ascii=False, separators=(",", ":")))
        (tmp / ".complete").touch()
        os.chmod(tmp, 0o755)
        try:
            os.replace(tmp, d)
        except OSError:  # another request wrote the same chunks first
            shutil.rmtree(tmp, ignore_errors=True)
        self.prune()
        return self.url(f"{d.name}/{{c}}.json")

    def prune(self) -> None:
        with self._lock:
            entries = []
            for p in self.root.iterdir():
                if p.name.startswith(".tmp-"):
                    if time.time() - p.stat().st_mtime > 3600:  # left by a killed server
                        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                    continue
                size = sum(f.stat().st_size for f in p.iterdir()) if p.is_dir() else p.stat().st_size
                entries.append((p.stat().st_mtime, size, p))
            total = sum(s for _, s, _ in entries)
            for _, size, p in sorted(entries, key=lambda e: e[0]):
                if total <= self.max_bytes:
                    break
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                total -= size


# ---------------------------------------------------------------------------------------
# The component's value


def normalise(xy: np.ndarray, margin: float = 0.95) -> np.ndarray:
    """x, y to [-margin, margin] around the centre, one scale for both (the map keeps its shape)."""
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) == 0:
        return xy.astype(np.float32).reshape(0, 2)
    finite = np.isfinite(xy).all(axis=1)
    lo = xy[finite].min(axis=0) if finite.any() else np.zeros(2)
    hi = xy[finite].max(axis=0) if finite.any() else np.zeros(2)
    half = float(max((hi - lo).max() / 2, 1e-12))
    out = (xy - (lo + hi) / 2) / half * margin
    out[~finite] = 0.0
    return out.astype(np.float32)


def encode_indices(indices: Sequence[int] | np.ndarray | None, n: int):
    """Indices for the page: a list, or {"mask": base64 bitmask (bit i of byte i//8, little-endian),
    "count": k} when the list would be longer (more than n/32 indices)."""
    idx = np.asarray([] if indices is None else indices, dtype=np.int64)
    if len(idx) <= max(n // 32, 64):
        return [int(i) for i in idx]
    bits = np.zeros(n, dtype=bool)
    bits[idx[(idx >= 0) & (idx < n)]] = True
    return {"mask": base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode(), "count": int(bits.sum())}


def indices_from_event(data: dict | None) -> list[int]:
    """The indices a `points_selected` event carries: {"indices": [...]} (both maps) or {"mask": ...}."""
    data = data or {}
    if data.get("mask"):
        raw = np.frombuffer(base64.b64decode(data["mask"]), dtype=np.uint8)
        bits = np.unpackbits(raw, bitorder="little")
        n = data.get("n")
        if n is not None:
            bits = bits[: int(n)]
        return np.flatnonzero(bits).tolist()
    return [int(i) for i in data.get("indices", [])]


def _colour_codes(values: np.ndarray, name: str) -> tuple[np.ndarray | None, dict]:
    """(uint16 codes or None, the value's colour fields): categories as in the Plotly map, numbers
    with more than MAX_CATEGORIES distinct values as a ramp."""
    from app.components.scatter import MAX_CATEGORIES, categorise

    kind, codes, labels = categorise(values)
    if kind == "num":
        v = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(v)
        lo = float(v[finite].min()) if finite.any() else 0.0
        hi = float(v[finite].max()) if finite.any() else 1.0
        span = hi - lo if hi > lo else 1.0
        q = np.where(finite, np.clip((v - lo) / span, 0, 1), 0.0)
        return np.round(q * 65535).astype(np.uint16), {"color": "num", "color_name": name, "range": [lo, hi],
                                                      "colors": viridis(RAMP_STEPS)}
    from app.components.colours import category_colours, named_colour

    assert len(labels) <= MAX_CATEGORIES
    colours = category_colours(labels)
    outline = all(named_colour(c) is not None for c in labels if c != "(other)")
    return codes.astype(np.uint16), {"color": "cat", "categories": labels, "colors": colours, "color_name": name,
                                     "outline": outline}


def viridis(steps: int) -> list[str]:
    from plotly.colors import sample_colorscale, sequential

    out = []
    for c in sample_colorscale(sequential.Viridis, [i / (steps - 1) for i in range(steps)]):
        r, g, b = (int(round(float(v))) for v in c[c.index("(") + 1:-1].split(",")[:3])
        out.append(f"#{r:02x}{g:02x}{b:02x}")
    return out


def scatter_gl_payload(
    xy: np.ndarray,
    *,
    files: MapFiles,
    color: Sequence | np.ndarray | None = None,
    color_name: str = "",
    hover: Sequence[str] | Callable[[], Sequence[str]] | None = None,
    tips_key: str | None = None,
    thumb_url: str | None = None,
    highlight: Sequence[int] | None = None,
    selected: Sequence[int] | None = None,
    title: str = "",
    axis_titles: tuple[str, str] = ("", ""),
    uirevision: str | None = None,
    point_size: float | None = None,
) -> str:
    """The value of a GL map (a few hundred bytes plus the legend): the points go to a file in `files`.

    hover: the tooltip of each point (or a callable giving them, called once per `tips_key`);
    thumb_url: a template with `{i}` for the row index, as for the Plotly map."""
    from backends.cache import content_key

    xy = np.asarray(xy)
    n = len(xy)
    z, spec = (None, {"color": None})
    if color is not None:
        z, spec = _colour_codes(np.asarray(color), color_name)
    norm = normalise(xy)
    points_url, nbytes = files.points(norm, z)
    value = {
        "gl": 1, "n": n, "points": points_url, "bytes": nbytes, "view": content_key(norm)[:16], **spec,
        "title": title, "axis": list(axis_titles),
        "uirevision": uirevision or title, "size": point_size or (6 if n < 20_000 else 4 if n < 200_000 else 2),
        "highlight": [int(i) for i in (highlight or [])], "selected": encode_indices(selected, n),
    }
    if hover is not None:
        value["tips"] = files.tips(hover, tips_key)
        value["tip_chunk"] = TIP_CHUNK
    if thumb_url:
        value["thumb"] = thumb_url
    return json.dumps(value, separators=(",", ":"))


def scatter_gl_patch(uirevision: str, n: int, *, highlight: Sequence[int] | None = None,
                     selected: Sequence[int] | None = None) -> str:
    """Only the highlight / selection of a GL map already drawn (as scatter.scatter_patch)."""
    payload: dict = {"patch": True, "uirevision": uirevision}
    if highlight is not None:
        payload["highlight"] = [int(i) for i in highlight]
    if selected is not None:
        payload["selected"] = encode_indices(selected, n)
    return json.dumps(payload, separators=(",", ":"))


def scatter_gl_map(*, height: int = 560, elem_id: str | None = None, value: str | None = None, **kwargs):
    """The map component (the same as scatter.scatter_map, which draws GL values with regl-scatterplot)."""
    from app.components.scatter import scatter_map

    return scatter_map(height=height, elem_id=elem_id, value=value, **kwargs)


# ---------------------------------------------------------------------------------------
# The page side, included in scatter.scatter_map's element

GL_TEMPLATE = (
    '<div class="la-gl" style="height:{height}px;display:none">'
    '<div class="la-gl-bar"><span class="la-gl-title"></span><span class="la-gl-modes">'
    '<button type="button" data-mode="lasso" class="on" title="Draw a lasso to select">Lasso</button>'
    '<button type="button" data-mode="rectangle" title="Drag a box to select">Box</button>'
    '<button type="button" data-mode="panZoom" title="Drag to pan (shift-drag lassos)">Pan</button>'
    '<button type="button" data-act="reset" title="Show the whole map">Reset</button></span></div>'
    '<div class="la-gl-main"><div class="la-gl-area"><canvas class="la-gl-points"></canvas>'
    '<canvas class="la-gl-marks"></canvas><div class="la-gl-axis la-gl-x"></div><div class="la-gl-axis la-gl-y"></div>'
    '</div><div class="la-gl-legend"></div></div></div>'
)

GL_CSS = """
.la-scatter .la-gl { display: flex; flex-direction: column; width: 100%; background: #fafafa; }
.la-scatter .la-gl-bar { display: flex; align-items: center; gap: 8px; padding: 2px 6px; font-size: 13px; min-height: 26px; }
.la-scatter .la-gl-title { flex: 1 1 auto; overflow-wrap: anywhere; }
.la-scatter .la-gl-modes button { font-size: 12px; padding: 1px 7px; margin-left: 2px; border: 1px solid #bbb;
  border-radius: 3px; background: white; cursor: pointer; }
.la-scatter .la-gl-modes button.on { background: #4c78a8; color: white; border-color: #4c78a8; }
.la-scatter .la-gl-main { flex: 1 1 auto; display: flex; min-height: 0; }
.la-scatter .la-gl-area { position: relative; flex: 1 1 auto; min-width: 0; overflow: hidden; }
.la-scatter .la-gl-area canvas { position: absolute; left: 0; top: 0; }
.la-scatter .la-gl-marks { pointer-events: none; }
.la-scatter .la-gl-axis { position: absolute; font-size: 12px; color: #444; pointer-events: none; }
.la-scatter .la-gl-x { bottom: 2px; left: 50%; transform: translateX(-50%); }
.la-scatter .la-gl-y { left: 2px; top: 50%; transform: rotate(-90deg) translateX(50%); transform-origin: left top; }
.la-scatter .la-gl-legend { flex: 0 0 auto; max-width: 180px; overflow-y: auto; font-size: 12px; padding: 4px 6px; }
.la-scatter .la-gl-legend:empty { display: none; }
.la-scatter .la-gl-legend .la-gl-key { display: flex; align-items: center; gap: 5px; line-height: 1.5; overflow-wrap: anywhere; }
.la-scatter .la-gl-legend .la-gl-swatch { flex: none; width: 10px; height: 10px; border-radius: 50%; }
.la-scatter .la-gl-legend .la-gl-ramp { width: 14px; height: 160px; border-radius: 2px; }
"""

GL_JS = r"""
const laGl = (() => {
  const PREFETCH_TIPS = 50000;
  const root = element.querySelector('.la-scatter');
  const box = root.querySelector('.la-gl');
  const area = box.querySelector('.la-gl-area');
  const canvas = area.querySelector('.la-gl-points');
  const marks = area.querySelector('.la-gl-marks');
  const legend = box.querySelector('.la-gl-legend');
  const tip = root.querySelector('.la-tip');
  let sp = null;           // the regl scatterplot
  let cur = null;          // the value drawn
  let pts = null;          // its float32 x, y (the file's views) and the grid for picking
  let grid = null;
  let selected = [];       // what the map shows selected (the tables' selection)
  let highlight = [];      // the clicked item and its neighbours: red rings
  let seq = 0, lassoSeq = -1, lassoEndAt = -1e9, hoverIdx = -1, loading = null, downAt = null;
  const chunks = new Map();
  // Frames. A frame of a million points takes 1-2 s of the page's main thread on a software renderer
  // (SwiftShader: regl-scatterplot copies its WebGL canvas into a 2-D one, which waits for the drawing), and
  // nothing else on the page runs meanwhile: not a fetched tooltip chunk, not Gradio's answer to a selection.
  // So hovering draws nothing (the picking is done here, the hovered point is a ring on the marks canvas), and
  // after a lasso, when the last 3 frames each took over tune.slowFrameMs, the frame that shows the selection is held
  // back so the request goes out and Python's answer is put in the tables first: until the page outside the
  // map has had no DOM change for tune.quietMs and tune.quietTicks animation frames (Gradio animates its
  // progress display on the outputs every frame until the answer is in, then puts it in; counting frames too
  // keeps a page starved of CPU, whose frames come late, from looking quiet), at most tune.holdMs, or until
  // the map gets a new value or the next mouse down / wheel on it. On a GPU (frames of milliseconds) nothing
  // is held. frames.released says what ended the last hold.
  const tune = {holdMs: 1000, slowFrameMs: 150, quietMs: 150, quietTicks: 4};
  const frames = {count: 0, lastMs: 0, recentMs: [], heldUntil: 0, quietSince: 0, quietTicks: 0, watch: null, released: ''};

  function loadLib() {
    if (window.createScatterplot) return Promise.resolve();
    if (!window.__laReglPromise) {
      window.__laReglPromise = new Promise((resolve, reject) => {
        const s = document.createElement('script');
        s.src = root.dataset.gl;
        s.onload = () => resolve();
        s.onerror = reject;
        document.head.appendChild(s);
      });
    }
    return window.__laReglPromise;
  }

  function decode(v, n) {
    if (Array.isArray(v)) return v;
    if (!v || !v.mask) return [];
    const raw = atob(v.mask), out = [];
    for (let b = 0; b < raw.length; b++) {
      const byte = raw.charCodeAt(b);
      if (!byte) continue;
      for (let k = 0; k < 8; k++) if (byte & (1 << k)) { const i = b * 8 + k; if (i < n) out.push(i); }
    }
    return out;
  }

  function encode(indices, n) {
    if (indices.length <= Math.max(n >> 5, 64)) return {indices};
    const bytes = new Uint8Array((n + 7) >> 3);
    for (const i of indices) bytes[i >> 3] |= 1 << (i & 7);
    let s = '';
    for (let b = 0; b < bytes.length; b += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(b, b + 0x8000));
    return {mask: btoa(s), count: indices.length, n};
  }

  function emitSelection(points) {
    selected = Array.from(Uint32Array.from(points).sort());
    root.dataset.selectedCount = String(selected.length);
    trigger('points_selected', {...encode(selected, cur.n), ts: Date.now()});
  }

  function showSelected() {
    if (sp && cur) sp.select(selected, {preventEvent: true});
  }

  function esc(s) { return String(s).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c])); }

  // Tooltip texts come in chunks of tip_chunk; a chunk already here is used at once, inside the pointOver
  // event, so the tooltip is drawn in the same frame as the hovered point (a promise's callback would run
  // only after that frame: ~1 s at a million points on a software renderer).
  function chunkUrl(i) { return cur.tips.replace('{c}', Math.floor(i / cur.tip_chunk)); }

  function loadChunk(url) {
    if (!chunks.has(url)) {
      if (chunks.size >= 64) chunks.delete(chunks.keys().next().value);
      const entry = {data: null};
      entry.promise = fetch(url).then(r => r.ok ? r.json() : []).catch(() => []).then(a => { entry.data = a; return a; });
      chunks.set(url, entry);
    }
    return chunks.get(url);
  }

  function placeTip(el, x, y, box) {
    // below-right of the point, or above / left of it where it would leave the map (it was cut off there)
    const w = el.offsetWidth, h = el.offsetHeight;
    const left = x + 14 + w > box.width ? x - 14 - w : x + 14;
    const top = y + 14 + h > box.height ? y - 14 - h : y + 14;
    el.style.left = Math.max(0, left) + 'px';
    el.style.top = Math.max(0, top) + 'px';
  }

  function putTip(i, text, t0) {
    let html = '';
    if (cur.thumb) html += `<img src="${esc(cur.thumb.replace('{i}', i))}" alt="">`;
    html += `<div>${esc(text)}</div>`;
    tip.innerHTML = html;
    const pos = sp.getScreenPosition(i) || [0, 0];
    const a = area.getBoundingClientRect(), r = root.getBoundingClientRect();
    tip.style.display = 'block';
    placeTip(tip, a.left - r.left + pos[0], a.top - r.top + pos[1], r);
    root.dataset.hovered = String(i);
    root.__laHover = {index: i, over: t0, shown: performance.now()};
    root.dataset.hoverMs = (root.__laHover.shown - t0).toFixed(1);
  }

  function showTip(i, t0 = performance.now()) {
    hoverIdx = i;
    if (!cur.tips) { putTip(i, String(i), t0); return; }
    const entry = loadChunk(chunkUrl(i)), k = i % cur.tip_chunk;
    if (entry.data) { putTip(i, entry.data[k] ?? String(i), t0); return; }
    entry.promise.then(a => { if (hoverIdx === i && sp && cur) putTip(i, a[k] ?? String(i), t0); });
  }

  // Picking (hover, click) from the float32 x, y the page has: a uniform grid of about 4 points a cell, built
  // once per map (~30 ms at a million points), and the view's screen transform, taken from regl-scatterplot's
  // own getScreenPosition of the points with the smallest and largest x and y (no rotation: x on screen depends
  // on x alone). regl-scatterplot's picking is off (pointSizeMouseDetection < 0 gives its search an empty box):
  // its hover highlight redraws every point.
  function buildGrid() {
    if (grid || !pts) return grid;
    const {x, y} = pts, n = x.length;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity, ix0 = 0, ix1 = 0, iy0 = 0, iy1 = 0;
    for (let i = 0; i < n; i++) {
      const a = x[i], b = y[i];
      if (a < x0) { x0 = a; ix0 = i; } if (a > x1) { x1 = a; ix1 = i; }
      if (b < y0) { y0 = b; iy0 = i; } if (b > y1) { y1 = b; iy1 = i; }
    }
    const g = Math.max(1, Math.min(2048, Math.ceil(Math.sqrt(n / 4))));
    const sx = g / Math.max(x1 - x0, 1e-12), sy = g / Math.max(y1 - y0, 1e-12);
    const cell = new Uint32Array(n), start = new Uint32Array(g * g + 1), order = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      const c = Math.min(g - 1, Math.floor((x[i] - x0) * sx)) + g * Math.min(g - 1, Math.floor((y[i] - y0) * sy));
      cell[i] = c; start[c + 1]++;
    }
    for (let c = 0; c < g * g; c++) start[c + 1] += start[c];
    const fill = start.slice(0, g * g);
    for (let i = 0; i < n; i++) order[fill[cell[i]]++] = i;
    grid = {g, x0, y0, sx, sy, start, order, ix0, ix1, iy0, iy1};
    return grid;
  }

  function pick(mx, my) {  // the nearest point within a point's radius + 4 px of (mx, my) in the area, or -1
    const gr = buildGrid();
    if (!gr || !sp || !sp.get('isPointsDrawn')) return -1;
    const {x, y} = pts;
    const px0 = sp.getScreenPosition(gr.ix0), px1 = sp.getScreenPosition(gr.ix1);
    const py0 = sp.getScreenPosition(gr.iy0), py1 = sp.getScreenPosition(gr.iy1);
    if (!px0 || !px1 || !py0 || !py1) return -1;
    let ax = x[gr.ix1] > x[gr.ix0] ? (px1[0] - px0[0]) / (x[gr.ix1] - x[gr.ix0]) : 0;
    let ay = y[gr.iy1] > y[gr.iy0] ? (py1[1] - py0[1]) / (y[gr.iy1] - y[gr.iy0]) : 0;
    if (!ax) ax = Math.abs(ay) || 1;
    if (!ay) ay = -Math.abs(ax);
    const bx = px0[0] - ax * x[gr.ix0], by = py0[1] - ay * y[gr.iy0];
    const s = 1 / (sp.get('cameraDistance') || 1), size = sp.get('pointSize');
    const ps = Array.isArray(size) ? Math.max(...size) : Number(size) || 1;
    const r = ps * (s > 1 ? Math.asinh(s) / Math.asinh(1) : Math.max(1 / ps, s)) + 4;
    const dx = (mx - bx) / ax, dy = (my - by) / ay, rx = r / Math.abs(ax), ry = r / Math.abs(ay);
    const c0 = Math.max(0, Math.floor((dx - rx - gr.x0) * gr.sx)), c1 = Math.min(gr.g - 1, Math.floor((dx + rx - gr.x0) * gr.sx));
    const r0 = Math.max(0, Math.floor((dy - ry - gr.y0) * gr.sy)), r1 = Math.min(gr.g - 1, Math.floor((dy + ry - gr.y0) * gr.sy));
    let best = -1, bestD = r * r;
    for (let row = r0; row <= r1; row++) {
      for (let k = gr.start[row * gr.g + c0], end = gr.start[row * gr.g + c1 + 1]; k < end; k++) {
        const i = gr.order[k], ex = (x[i] - dx) * ax, ey = (y[i] - dy) * ay, d = ex * ex + ey * ey;
        if (d < bestD || (d === bestD && best >= 0 && i < best)) { bestD = d; best = i; }
      }
    }
    return best;
  }

  function mousePos(e) { const a = area.getBoundingClientRect(); return [e.clientX - a.left, e.clientY - a.top]; }

  function hoverAt(e) {
    if (!cur || !sp || e.buttons) return;  // a lasso or a pan in progress: no tooltip
    const t0 = performance.now();
    const i = pick(...mousePos(e));
    if (i === hoverIdx) return;
    if (i < 0) { hideTip(); return; }
    showTip(i, t0);
    drawMarks();
  }

  function hideTip() {
    const had = hoverIdx >= 0;
    hoverIdx = -1;
    tip.style.display = 'none';
    if (had) drawMarks();
  }

  // A click on a point (the mouse moved less than 3 px since it went down): point_click. A lasso closed where
  // it began ends with a click there too: not the user's click.
  function clickAt(e) {
    if (!cur || !downAt || performance.now() - lassoEndAt < 300) return;
    const [mx, my] = mousePos(e);
    if (Math.hypot(mx - downAt[0], my - downAt[1]) >= 3) return;
    const i = pick(mx, my);
    if (i >= 0) trigger('point_click', {index: i, ts: Date.now()});
  }

  // Frames held back while Python answers (see tune above)
  function holdFrames() {
    if (!frames.recentMs.length || Math.min(...frames.recentMs) < tune.slowFrameMs) return;  // e.g. a GPU
    const now = performance.now();
    frames.heldUntil = now + tune.holdMs;
    frames.quietSince = now;
    frames.quietTicks = 0;
    root.dataset.heldFrames = '1';
    if (!frames.watch) {
      frames.watch = new MutationObserver(records => {
        if (records.some(r => !root.contains(r.target))) { frames.quietSince = performance.now(); frames.quietTicks = 0; }
      });
      frames.watch.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
    }
  }
  function releaseFrames(why) {
    if (frames.heldUntil) frames.released = typeof why === 'string' ? why : 'input';
    frames.heldUntil = 0;
    if (frames.watch) { frames.watch.disconnect(); frames.watch = null; }
    delete root.dataset.heldFrames;
  }
  function makeRenderer() {
    const renderer = window.createScatterplotRenderer();
    const onFrame = renderer.onFrame, render = renderer.render;
    renderer.onFrame = (fn) => onFrame(() => {
      if (frames.heldUntil) {
        const now = performance.now();
        const quiet = ++frames.quietTicks > tune.quietTicks && now - frames.quietSince >= tune.quietMs;
        if (now < frames.heldUntil && !quiet) return;  // the frame waits: regl-scatterplot keeps its redraw flag
        releaseFrames(quiet ? 'quiet' : 'time');
      }
      fn();
    });
    renderer.render = (...args) => {
      const t = performance.now();
      render(...args);
      frames.lastMs = performance.now() - t;
      frames.recentMs = [...frames.recentMs.slice(-2), frames.lastMs];  // one slow frame (shaders compiled) is not enough
      root.dataset.renders = String(++frames.count);
    };
    return renderer;
  }

  function prefetchTips(v) {  // small maps: every chunk now (at most PREFETCH_TIPS points' texts)
    if (!v.tips || v.n > PREFETCH_TIPS) return;
    for (let c = 0; c * v.tip_chunk < v.n; c++) loadChunk(v.tips.replace('{c}', c));
  }

  function drawMarks() {
    const r = area.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    const w = Math.round(r.width * dpr), h = Math.round(r.height * dpr);
    if (marks.width !== w || marks.height !== h) {
      marks.width = w; marks.height = h; marks.style.width = r.width + 'px'; marks.style.height = r.height + 'px';
    }
    const ctx = marks.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, r.width, r.height);
    if (!sp || !cur || !sp.get('isPointsDrawn')) return;
    if (hoverIdx >= 0 && hoverIdx < cur.n) {
      const p = sp.getScreenPosition(hoverIdx);
      if (p) { ctx.beginPath(); ctx.arc(p[0], p[1], 5, 0, 2 * Math.PI); ctx.strokeStyle = '#111'; ctx.lineWidth = 1.5; ctx.stroke(); }
    }
    highlight.forEach((i, k) => {
      const p = (i >= 0 && i < cur.n) ? sp.getScreenPosition(i) : null;
      if (!p) return;
      ctx.beginPath();
      ctx.arc(p[0], p[1], k === 0 ? 8 : 6, 0, 2 * Math.PI);
      ctx.strokeStyle = '#e4002b';
      ctx.lineWidth = k === 0 ? 3 : 2;
      ctx.stroke();
    });
  }

  function setMode(mode) {
    box.querySelectorAll('.la-gl-modes button[data-mode]').forEach(b => b.classList.toggle('on', b.dataset.mode === mode));
    if (!sp) return;
    if (mode === 'panZoom') sp.set({mouseMode: 'panZoom'});
    else sp.set({mouseMode: 'lasso', lassoType: mode === 'rectangle' ? 'rectangle' : 'freeform'});
  }

  function ensure() {
    if (sp) return sp;
    const r = area.getBoundingClientRect();
    sp = window.createScatterplot({
      canvas, renderer: makeRenderer(), pointSizeMouseDetection: -1e9, width: Math.max(50, Math.round(r.width)), height: Math.max(50, Math.round(r.height)),
      pointSize: 3, backgroundColor: '#fafafa', pointColor: '#4c78a8', pointColorActive: '#111111',
      pointColorHover: '#e4002b', pointSizeSelected: 2, pointOutlineWidth: 1, lassoColor: '#4c78a8',
      opacityInactiveScale: 0.12,  // while something is selected the rest fade, as on the Plotly map
      lassoMinDelay: 10, lassoMinDist: 3, mouseMode: 'lasso', deselectOnDblClick: true, deselectOnEscape: true,
      syncEvents: true,
    });
    // Events are published synchronously: when lassoEnd comes the lasso's points are the selection (select came
    // just before) and no frame has been drawn yet. A lasso that selects nothing deselects first: a deselect is
    // acted on a moment later, unless a lassoEnd came meanwhile (double click, Escape).
    sp.subscribe('deselect', () => {
      const s = ++seq;
      setTimeout(() => { if (lassoSeq >= s || !cur) return; emitSelection([]); holdFrames(); }, 0);
    });
    sp.subscribe('lassoEnd', () => {
      lassoSeq = seq; lassoEndAt = performance.now();
      if (cur) { emitSelection(sp.get('selectedPoints')); holdFrames(); }
    });
    sp.subscribe('view', drawMarks);
    area.addEventListener('mousemove', hoverAt);
    area.addEventListener('mouseleave', hideTip);
    // regl-scatterplot's own mouseleave only redraws (to drop its hover highlight, unused here): a frame of every
    // point for nothing, so it does not get the event
    area.addEventListener('mouseleave', e => { if (e.target === canvas) e.stopPropagation(); }, true);
    area.addEventListener('mousedown', e => { downAt = mousePos(e); releaseFrames(); }, true);
    area.addEventListener('wheel', releaseFrames, {capture: true, passive: true});
    canvas.addEventListener('click', clickAt);
    box.querySelectorAll('.la-gl-modes button').forEach(b => b.addEventListener('click', () => {
      if (b.dataset.act === 'reset') sp.reset();
      else setMode(b.dataset.mode);
    }));
    new ResizeObserver(() => {
      const a = area.getBoundingClientRect();
      if (a.width > 0 && a.height > 0) sp.set({width: Math.round(a.width), height: Math.round(a.height)});
      drawMarks();
    }).observe(area);
    return sp;
  }

  function drawLegend(v) {
    const name = v.color_name ? `<div><b>${esc(v.color_name)}</b></div>` : '';
    if (v.color === 'cat') {
      legend.innerHTML = name + v.categories.map((c, k) =>
        `<div class="la-gl-key"><span class="la-gl-swatch" style="background:${esc(v.colors[k])}"></span>${esc(c)}</div>`).join('');
    } else if (v.color === 'num') {
      const fmt = x => Number(x).toPrecision(4).replace(/\.?0+$/, '');
      legend.innerHTML = name + `<div>${esc(fmt(v.range[1]))}</div><div class="la-gl-ramp" style="background:linear-gradient(to top, ${v.colors.join(',')})"></div><div>${esc(fmt(v.range[0]))}</div>`;
    } else {
      legend.innerHTML = '';
    }
  }

  function setPoints(xy) {
    pts = xy; grid = null;
    const later = window.requestIdleCallback || (f => setTimeout(f, 50));
    later(() => { if (pts === xy) buildGrid(); });
  }

  async function draw(v) {
    const t0 = performance.now();
    loading = v.points;
    const resp = await fetch(v.points);
    if (!resp.ok) throw new Error(`map data: HTTP ${resp.status}`);
    const buf = await resp.arrayBuffer();
    if (loading !== v.points) return false;  // a newer map came meanwhile
    const t1 = performance.now();
    const n = v.n;
    const xy = {x: new Float32Array(buf, 0, n), y: new Float32Array(buf, 4 * n, n)};
    const data = {...xy};
    let zDataType;
    if (v.color) {
      const q = new Uint16Array(buf, 8 * n, n);
      if (v.color === 'num') { const z = new Float32Array(n); for (let i = 0; i < n; i++) z[i] = q[i] / 65535; data.z = z; zDataType = 'continuous'; }
      else { data.z = q; zDataType = 'categorical'; }
    }
    const sameView = cur && cur.view === v.view;  // new colours on the same coordinates keep the zoom
    sp.set({colorBy: v.color ? 'valueA' : null, pointColor: v.color ? v.colors : '#4c78a8', pointSize: v.size,
            opacity: n > 200000 ? 0.7 : 0.9});
    await sp.draw(data, {zDataType});
    if (!sameView) sp.reset();
    setPoints(xy);
    root.__laGlTimes = {fetch_ms: t1 - t0, draw_ms: performance.now() - t1, bytes: buf.byteLength};
    return true;
  }

  async function render(parsed) {
    box.style.display = '';
    releaseFrames('value');  // a new value from Python: its answer is in
    if (parsed.patch) {
      if (!cur || cur.uirevision !== parsed.uirevision) return;
      if (parsed.highlight) highlight = parsed.highlight;
      if (parsed.selected) { selected = decode(parsed.selected, cur.n); showSelected(); }
      drawMarks();
      root.dataset.patched = String(Date.now());
      return;
    }
    const v = parsed;
    await loadLib();
    ensure();
    box.querySelector('.la-gl-title').textContent = v.title || '';
    area.querySelector('.la-gl-x').textContent = (v.axis || [])[0] || '';
    area.querySelector('.la-gl-y').textContent = (v.axis || [])[1] || '';
    drawLegend(v);
    if (!cur || cur.points !== v.points || !sp.get('isPointsDrawn')) {
      delete root.dataset.glReady;
      if (!(await draw(v))) return;
    }
    if (!cur || cur.tips !== v.tips) chunks.clear();
    cur = v;
    prefetchTips(v);
    highlight = v.highlight || [];
    selected = decode(v.selected, v.n);
    showSelected();
    drawMarks();
    root.dataset.points = String(v.n);
    root.dataset.ready = String(Date.now());
    root.dataset.glReady = root.dataset.ready;
  }

  const api = {
    render(parsed) { render(parsed).catch(e => { root.dataset.glError = String(e); console.error(e); }); },
    hide() { box.style.display = 'none'; tip.style.display = 'none'; cur = null; loading = null; pts = null; grid = null; },
    active() { return cur !== null || loading !== null; },
    hover(i) { if (cur && i >= 0 && i < cur.n) { showTip(i); drawMarks(); } else hideTip(); },  // as the mouse would
    release: releaseFrames,
    pick,
    tune,
    frames,
    get plot() { return sp; },
  };
  root.__laGl = api;  // for tests and the bench: __laGl.plot is the regl scatterplot
  return api;
})();
"""
