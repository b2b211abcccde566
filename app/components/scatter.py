"""An interactive WebGL scatter map: gr.HTML hosting plotly.js (and regl-scatterplot for large maps).

gr.Plot passes no clicks or lasso selections to Python; this component does, through custom
events triggered from JavaScript:

    plot = scatter_map(height=560)
    plot.point_click(fn, inputs, outputs)      # evt._data == {"index": int, "id": str}
    plot.points_selected(fn, inputs, outputs)  # evt._data == {"indices": [int], "ids": [str]}

Its value is a JSON string made by `scatter_payload(...)`; updating the value re-renders the
same div with Plotly.react, so listeners survive new data. Hovering shows the item's
thumbnail (from a URL template) or its text, with no Python round trip.

A value made by `scatter_gl.scatter_gl_payload` (maps of more than scatter_gl.GL_THRESHOLD points)
is drawn in the same element by regl-scatterplot instead, with the same events: see
app/components/scatter_gl.py for why and how.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.components.colours import PALETTE as _PALETTE
from app.components.colours import category_colours, named_colour
from app.components.scatter_gl import GL_CSS, GL_JS, GL_TEMPLATE, bundle_url
from app.components.scatter_gl import static_paths as _gl_static_paths

PLOTLY_JS = None  # resolved lazily: the plotly.min.js shipped inside the plotly Python package

PALETTE = list(_PALETTE)  # group colours elsewhere in the app (Annotate); categories use category_colours
MAX_CATEGORIES = 40


def plotly_js_path() -> Path:
    global PLOTLY_JS
    if PLOTLY_JS is None:
        import plotly

        PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return PLOTLY_JS


def static_paths() -> list[str]:
    """Paths the app must pass to gr.set_static_paths for this component to work: plotly.js and the
    regl-scatterplot bundle (app/static). A GL map's files need their folder too (scatter_gl.MapFiles)."""
    return [str(plotly_js_path().parent)] + _gl_static_paths()


def scatter_payload(
    xy: np.ndarray,
    *,
    ids: Sequence[str],
    color: Sequence | None = None,
    color_name: str = "",
    hover: Sequence[str] | None = None,
    thumb_url: str | None = None,
    highlight: Sequence[int] | None = None,
    selected: Sequence[int] | None = None,
    title: str = "",
    dragmode: str = "lasso",
    point_size: float | None = None,
    axis_titles: tuple[str, str] = ("", ""),
    uirevision: str | None = None,
) -> str:
    """JSON for the component. thumb_url is a template with `{i}` replaced by the row index."""
    xy = np.asarray(xy, dtype=np.float32)
    n = len(xy)
    payload: dict = {
        "x": np.round(xy[:, 0].astype(float), 4).tolist(),
        "y": np.round(xy[:, 1].astype(float), 4).tolist(),
        "ids": [str(i) for i in ids],
        "title": title,
        "dragmode": dragmode,
        "size": point_size or (7 if n < 2_000 else 5 if n < 20_000 else 3),
        "axis": list(axis_titles),
        "uirevision": uirevision or title,
    }
    if color is not None:
        payload.update(_color_spec(np.asarray(color), color_name))
    if hover is not None:
        payload["hover"] = [str(h)[:300] for h in hover]
    if thumb_url:
        payload["thumb"] = thumb_url
    if highlight is not None:
        payload["highlight"] = [int(i) for i in highlight]
    if selected is not None:
        payload["selected"] = [int(i) for i in selected]
    return json.dumps(payload, separators=(",", ":"))


def scatter_patch(uirevision: str, *, highlight: Sequence[int] | None = None,
                  selected: Sequence[int] | None = None) -> str:
    """A small update for a map already drawn with the same `uirevision`: new highlight/selection only.

    Clicks and searches on a 100k-point map send a few bytes instead of the whole figure.
    """
    payload: dict = {"patch": True, "uirevision": uirevision}
    if highlight is not None:
        payload["highlight"] = [int(i) for i in highlight]
    if selected is not None:
        payload["selected"] = [int(i) for i in selected]
    return json.dumps(payload, separators=(",", ":"))


def categorise(values: np.ndarray) -> tuple[str, np.ndarray | None, list[str] | None]:
    """("num", None, None) for numbers with more than MAX_CATEGORIES distinct values, else
    ("cat", codes, labels): at most MAX_CATEGORIES labels, the rarest strings as "(other)"."""
    values = np.asarray(values)
    numeric = np.issubdtype(values.dtype, np.number) and not np.issubdtype(values.dtype, np.bool_)
    uniq = np.unique(values.astype(str)) if not numeric else np.unique(values)
    if numeric and len(uniq) > MAX_CATEGORIES:
        return "num", None, None
    labels = values.astype(str)
    cats, codes = np.unique(labels, return_inverse=True)
    if len(cats) > MAX_CATEGORIES:  # many distinct strings: keep the most frequent, rest as "other"
        counts = np.bincount(codes)
        top = np.argsort(-counts)[: MAX_CATEGORIES - 1]
        keep = np.zeros(len(cats), bool)
        keep[top] = True
        labels = np.where(keep[codes], labels, "(other)")
        cats, codes = np.unique(labels, return_inverse=True)
    return "cat", codes, cats.tolist()


def _color_spec(values: np.ndarray, name: str) -> dict:
    kind, codes, cats = categorise(values)
    if kind == "num":
        v = values.astype(float)
        return {"color_num": np.round(v, 5).tolist(), "color_name": name}
    colours = category_colours(cats)
    outline = all(named_colour(c) is not None for c in cats if c != "(other)")
    return {"color_cat": codes.astype(int).tolist(), "categories": cats, "color_name": name,
            "colors": colours, "outline": outline}


PLOTLY_MAP_JS = r"""
const root = element.querySelector('.la-scatter');
const plotDiv = root.querySelector('.la-plot');
const tip = root.querySelector('.la-tip');
let data = null;
let lastSelTs = 0;
let ignoreDeselectUntil = 0;

function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!window.__laPlotlyPromise) {
    window.__laPlotlyPromise = new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = root.dataset.plotly;
      s.onload = () => resolve(window.Plotly);
      s.onerror = reject;
      document.head.appendChild(s);
    });
  }
  return window.__laPlotlyPromise;
}

function traces(d) {
  const n = d.x.length;
  const out = [];
  const base = {type: 'scattergl', mode: 'markers', hoverinfo: 'none'};
  if (d.color_cat) {
    const groups = d.categories.map(() => []);
    d.color_cat.forEach((c, i) => groups[c].push(i));
    groups.forEach((idx, c) => {
      if (!idx.length) return;
      out.push({...base, name: String(d.categories[c]),
        x: idx.map(i => d.x[i]), y: idx.map(i => d.y[i]), customdata: idx,
        marker: {size: d.size, color: d.colors[c], opacity: 0.85,
                 line: d.outline ? {color: 'rgba(60,60,60,0.6)', width: 0.6} : {width: 0}}});
    });
  } else {
    const idx = Array.from({length: n}, (_, i) => i);
    const marker = {size: d.size, opacity: 0.8, color: d.color_num || '#4c78a8'};
    if (d.color_num) { marker.colorscale = 'Viridis'; marker.showscale = true;
      marker.colorbar = {title: {text: d.color_name || ''}, thickness: 12}; }
    out.push({...base, name: 'items', x: d.x, y: d.y, customdata: idx, marker, showlegend: false});
  }
  // Search hits / the selection: drawn again on top in their own colour with a dark edge, while the
  // rest fade. (Open rings, as before, merged into one black blob over a dense cluster of hits.)
  const sel = d.selected || [];
  if (sel.length) {
    for (const t of out) t.marker.opacity = 0.18;
    let color = '#4c78a8';
    const marker = {size: d.size + 2, opacity: 1, symbol: 'circle', line: {color: '#111', width: 1}};
    if (d.color_cat) color = sel.map(i => d.colors[d.color_cat[i]]);
    else if (d.color_num) {
      color = sel.map(i => d.color_num[i]);
      let lo = Infinity, hi = -Infinity;
      for (const v of d.color_num) { if (v < lo) lo = v; if (v > hi) hi = v; }
      Object.assign(marker, {colorscale: 'Viridis', cmin: lo, cmax: hi});
    }
    marker.color = color;
    out.push({...base, name: 'selected', showlegend: false, x: sel.map(i => d.x[i]), y: sel.map(i => d.y[i]),
      customdata: sel, marker});
  }
  const hl = d.highlight || [];  // the clicked item and its neighbours: red rings, few of them
  if (hl.length) {
    out.push({...base, name: 'highlight', showlegend: false, x: hl.map(i => d.x[i]), y: hl.map(i => d.y[i]),
      customdata: hl, marker: {color: 'rgba(0,0,0,0)', size: d.size + 9, symbol: 'circle',
                                line: {color: '#e4002b', width: 2.5}}});
  }
  return out;
}

function layout(d) {
  return {margin: {l: 30, r: 10, t: d.title ? 44 : 10, b: 30}, title: d.title ? {text: d.title, font: {size: 13}, x: 0.01, xanchor: 'left', y: 0.99, yanchor: 'top'} : undefined,
    dragmode: d.dragmode || 'lasso', hovermode: 'closest', uirevision: d.uirevision,
    modebar: {orientation: 'v'},  // down the right edge, clear of the title
    legend: {itemsizing: 'constant', title: {text: d.color_name || ''}},
    xaxis: {title: {text: d.axis[0] || ''}, zeroline: false}, yaxis: {title: {text: d.axis[1] || ''}, zeroline: false},
    plot_bgcolor: '#fafafa'};
}

function render() {
  const raw = props.value;
  if (!raw) return;
  let parsed;
  try { parsed = typeof raw === 'string' ? JSON.parse(raw) : raw; } catch (e) { return; }
  if (parsed.gl || (parsed.patch && laGl.active())) {  // a large map: regl-scatterplot (scatter_gl.py)
    plotDiv.style.display = 'none';
    tip.style.display = 'none';
    data = null;
    laGl.render(parsed);
    return;
  }
  if (!parsed.patch) { laGl.hide(); plotDiv.style.display = ''; }
  let clearLasso = false;
  if (parsed.patch) {
    if (!data || data.uirevision !== parsed.uirevision) return;  // a patch for a map no longer shown
    if (parsed.highlight) data.highlight = parsed.highlight;
    if (parsed.selected) { data.selected = parsed.selected; clearLasso = true; }  // e.g. a search replaced a lasso
  } else {
    data = parsed;
  }
  loadPlotly().then(Plotly => {
    // No link leaves the machine: no "Share chart" to Plotly Cloud, no "Edit in Chart Studio", no logo link.
    Plotly.react(plotDiv, traces(data), layout(data), {responsive: true, displaylogo: false,
      showSendToCloud: false, showEditInChartStudio: false, showLink: false, plotlyServerURL: '',
      modeBarButtonsToRemove: ['toImage', 'sendChartToCloud', 'sendDataToCloud', 'editInChartStudio']});
    if (!plotDiv.__laBound) { bind(Plotly); plotDiv.__laBound = true; }
    if (clearLasso && ((plotDiv.layout.selections || []).length || plotDiv.data.some(t => t.selectedpoints))) {
      // the old lasso/box and its dimmed points go: the map shows one selection, the one in the tables
      ignoreDeselectUntil = Date.now() + 800;
      Plotly.relayout(plotDiv, {selections: []});
      Plotly.restyle(plotDiv, {selectedpoints: [null]});
    }
    root.dataset.ready = String(Date.now());
    root.dataset.points = String(data.x.length);
  });
}

function pointIndex(p) { return (p && p.customdata !== undefined) ? p.customdata : null; }

function bind(Plotly) {
  plotDiv.on('plotly_click', ev => {
    const p = ev && ev.points && ev.points[0];
    const i = pointIndex(p);
    if (i === null || !data) return;
    trigger('point_click', {index: i, id: data.ids[i], ts: Date.now()});
  });
  plotDiv.on('plotly_selected', ev => {
    // A plain click in lasso mode, and Plotly.react after a lasso, send empty selections: a real
    // clear comes as plotly_deselect (double click).
    if (!ev || !ev.points || !ev.points.length || !data) return;
    const seen = new Set();
    ev.points.forEach(p => { const i = pointIndex(p); if (i !== null) seen.add(i); });
    const indices = Array.from(seen).sort((a, b) => a - b);
    lastSelTs = Date.now();
    trigger('points_selected', {indices, ids: indices.map(i => data.ids[i]), ts: lastSelTs});
  });
  plotDiv.on('plotly_deselect', () => {
    if (Date.now() < ignoreDeselectUntil) return;  // our own clearing, not the user's double click
    trigger('points_selected', {indices: [], ids: [], ts: Date.now()});
  });
  plotDiv.on('plotly_hover', ev => {
    const p = ev && ev.points && ev.points[0];
    const i = pointIndex(p);
    if (i === null || !data) return;
    let html = '';
    if (data.thumb) html += `<img src="${data.thumb.replace('{i}', i)}" alt="">`;
    const text = data.hover ? data.hover[i] : data.ids[i];
    html += `<div>${String(text).replace(/[&<>]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;'}[c]))}</div>`;
    tip.innerHTML = html;
    const box = root.getBoundingClientRect();
    const e = ev.event || {};
    tip.style.display = 'block';
    // below-right of the pointer, or above / left of it where it would leave the map (it was cut off there)
    const x = (e.clientX || 0) - box.left, y = (e.clientY || 0) - box.top;
    const w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = Math.max(0, x + 14 + w > box.width ? x - 14 - w : x + 14) + 'px';
    tip.style.top = Math.max(0, y + 14 + h > box.height ? y - 14 - h : y + 14) + 'px';
  });
  plotDiv.on('plotly_unhover', () => { tip.style.display = 'none'; });
}

watch('value', render);
render();
"""

JS_ON_LOAD = GL_JS + PLOTLY_MAP_JS

CSS = GL_CSS + """
.la-scatter { position: relative; width: 100%; }
.la-scatter .la-plot { width: 100%; }
.la-scatter .la-tip { position: absolute; display: none; pointer-events: none; z-index: 20;
  background: white; border: 1px solid #ccc; border-radius: 4px; padding: 4px; max-width: 180px;
  font-size: 12px; box-shadow: 0 2px 6px rgba(0,0,0,.15); }
.la-scatter .la-tip img { width: 96px; height: 96px; image-rendering: pixelated; display: block; }
"""


def scatter_map(*, height: int = 560, elem_id: str | None = None, value: str | None = None, **kwargs):
    """The component. Call inside a gr.Blocks context."""
    import gradio as gr

    src = f"/gradio_api/file={plotly_js_path()}"
    template = (
        f'<div class="la-scatter" data-plotly="{src}" data-gl="{bundle_url()}">'
        f'<div class="la-plot" style="height:{int(height)}px"></div>'
        + GL_TEMPLATE.format(height=int(height)) + '<div class="la-tip"></div></div>'
    )
    return gr.HTML(
        value=value,
        html_template=template,
        css_template=CSS,
        js_on_load=JS_ON_LOAD,
        elem_id=elem_id,
        min_height=height,
        **kwargs,
    )
