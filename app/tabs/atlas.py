"""Atlas tab: a 2-D map of any corpus with thumbnails, neighbours, search, selection and export.

Pure functions first (each takes small keys and returns values), then the layout, then the
wiring. The view state is a small dict: {"corpus": key, "xy": key of the coordinates in
the backend's store, "axes": axis titles, "highlight": [...], "selected": [...]}.
"""
from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict

import gradio as gr
import numpy as np
from gradio.data_classes import FileData

from app.components.display import enlarge
from app.components.errors import api_guard, guard
from app.components.files import uploaded_path
from app.components.tables import empty_table
from backends.cache import content_key
from backends.errors import InputError
from backends.corpora.projection import ProjectionParams
from backends.registry import Backends

K_DEFAULT = 10
MAX_DEFAULT_CLASSES = 20  # a corpus opens coloured by a column with at most this many values
MAX_TABLE_ROWS = 500
# Columns every corpus has (its metadata columns follow); the tables start with these.
NEIGHBOUR_COLUMNS = ("id", "distance")
SELECTION_COLUMNS = ("id", "x", "y")
NO_SELECTION = "Draw a lasso or box on the map to select items."
EXPORT_FORMATS = ("csv", "parquet", "jsonl")


class _XYStore:
    """Coordinates of the maps people are looking at, by key (LRU, shared by users)."""

    def __init__(self, size: int = 64):
        self._d: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def put(self, xy: np.ndarray) -> str:
        key = content_key(xy)
        with self._lock:
            self._d[key] = xy
            self._d.move_to_end(key)
            while len(self._d) > self._size:
                self._d.popitem(last=False)
        return key

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            return self._d.get(key)


class AtlasService:
    """What the Atlas tab (and its API) does, independent of the layout."""

    def __init__(self, backends: Backends):
        self.b = backends
        self.xy = _XYStore()

    # -- helpers ---------------------------------------------------------------------
    def _xy(self, view: dict, params: ProjectionParams | None = None) -> np.ndarray:
        xy = self.xy.get(view.get("xy", "")) if view.get("xy") else None
        if xy is None or len(xy) != len(self.b.corpus(view["corpus"])):
            xy = self.b.projection(view["corpus"], params or ProjectionParams(**view.get("params", {})))
        return xy

    def item_index(self, key: str, item_id: str) -> int:
        ids = self.b.corpus(key).meta["id"]
        hit = np.flatnonzero((ids == str(item_id)).to_numpy())
        if len(hit) == 0:
            raise InputError(f"no item with id {item_id!r} in this corpus")
        return int(hit[0])

    def thumb_url(self, key: str) -> str | None:
        d = self.b.thumbnail_dir(key)
        return f"/gradio_api/file={d}/{{i}}.png" if d is not None else None

    def color_values(self, key: str, color_by: str | None):
        corpus = self.b.corpus(key)
        if not color_by or color_by == "(none)":
            return None
        if color_by not in corpus.meta.columns:
            raise InputError(f"cannot colour by {color_by!r}: the corpus has columns {', '.join(corpus.metadata_columns())}")
        return corpus.meta[color_by].to_numpy()

    def hover_texts(self, key: str) -> list[str]:
        corpus = self.b.corpus(key)
        cols = corpus.metadata_columns()[:4]
        base = corpus.meta["id"].astype(str)
        for c in cols:
            base = base + " · " + c + "=" + corpus.meta[c].astype(str).str.slice(0, 60)
        if corpus.texts is not None:
            base = base + "\n" + np.asarray(corpus.texts, dtype=object).astype(str)
        return base.tolist()

    def payload(self, view: dict, color_by: str | None) -> str:
        from app.components.scatter import scatter_payload

        key = view["corpus"]
        corpus = self.b.corpus(key)
        xy = self._xy(view)
        return scatter_payload(
            xy,
            ids=corpus.meta["id"].tolist(),
            color=self.color_values(key, color_by),
            color_name=color_by or "",
            hover=self.hover_texts(key),
            thumb_url=self.thumb_url(key),
            highlight=view.get("highlight"),
            selected=view.get("selected"),
            title=f"{corpus.name} · {len(corpus):,} items · {view.get('label', '')}",
            axis_titles=tuple(view.get("axes", ("", ""))),
            uirevision=self.revision(view, color_by),
        )

    @staticmethod
    def revision(view: dict, color_by: str | None) -> str:
        return f"{view['corpus']}:{view.get('xy', '')}:{color_by or ''}"

    def patch(self, view: dict, color_by: str | None) -> str:
        """Only the highlight/selection of the map already drawn (a few bytes, not the figure)."""
        from app.components.scatter import scatter_patch

        return scatter_patch(self.revision(view, color_by), highlight=view.get("highlight", []),
                             selected=view.get("selected", []))

    # -- actions ---------------------------------------------------------------------
    def project(self, key: str, method: str, n_neighbors: int, min_dist: float, metric: str,
                progress=None) -> dict:
        params = ProjectionParams(method=method, n_neighbors=int(n_neighbors), min_dist=float(min_dist), metric=metric)
        xy = self.b.projection(key, params, progress=progress)
        label = f"{method.upper()}" + (f" (n_neighbors={int(n_neighbors)}, min_dist={float(min_dist):g}, {metric})"
                                       if method == "umap" else "")
        return {"corpus": key, "xy": self.xy.put(xy), "params": params.__dict__, "axes": ["", ""],
                "label": label, "highlight": [], "selected": []}

    def neighbours(self, key: str, item_id: str, k: int = K_DEFAULT, metric: str = "cosine") -> list[dict]:
        k = int(k)
        if not 1 <= k <= 200:
            raise InputError(f"k must be between 1 and 200, but is {k}")
        corpus = self.b.corpus(key)
        item = self.item_index(key, item_id)
        dist, idx = self.b.neighbours(key, item, k, metric)
        rows = []
        for d, i in zip(dist.tolist(), idx.tolist()):
            row = {"id": corpus.meta["id"].iat[i], "index": int(i), "distance": round(float(d), 5)}
            row.update({c: _plain(corpus.meta[c].iat[i]) for c in corpus.metadata_columns()[:6]})
            rows.append(row)
        return rows

    def search(self, key: str, query: str, regex: bool = False) -> list[int]:
        from backends.corpora.explore import search_metadata

        return search_metadata(self.b.corpus(key), query, regex=bool(regex)).tolist()

    def text_search(self, key: str, text: str, k: int = 50) -> list[tuple[int, float]]:
        """Items nearest to a free-text query in the corpus's own space (needs an aligned text encoder)."""
        corpus = self.b.corpus(key)
        if corpus.text_query is None:
            raise InputError(f"corpus {corpus.name!r} has no aligned text encoder; use the metadata search instead")
        k = int(k)
        if not 1 <= k <= 1000:
            raise InputError(f"k must be between 1 and 1000, but is {k}")
        q = corpus.text_query(text)
        dist, idx = self.b.index(key, "cosine").search(q[None, :], k)
        return [(int(i), float(d)) for d, i in zip(dist[0], idx[0]) if i >= 0]

    def more_like_this(self, key: str, item_id: str, k: int = 50, metric: str = "cosine") -> list[int]:
        item = self.item_index(key, item_id)
        _, idx = self.b.neighbours(key, item, int(k), metric)
        return [item] + idx.tolist()

    def custom_axes(self, key: str, x_a: str, x_b: str, y_a: str, y_b: str) -> dict:
        from backends.corpora.explore import custom_axes

        xy, titles = custom_axes(self.b.corpus(key), x_a, x_b, y_a, y_b)
        return {"corpus": key, "xy": self.xy.put(xy), "axes": list(titles), "label": "custom axes",
                "highlight": [], "selected": []}

    def rows(self, view: dict, indices: list[int]):
        import pandas as pd

        corpus = self.b.corpus(view["corpus"])
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(corpus)):
            raise InputError(f"selection has indices outside 0..{len(corpus) - 1}")
        xy = self._xy(view)
        df = corpus.meta.iloc[idx].copy()
        df["x"] = np.round(xy[idx, 0], 4)
        df["y"] = np.round(xy[idx, 1], 4)
        return df.reset_index(drop=True) if len(idx) else pd.DataFrame(columns=list(corpus.meta.columns) + ["x", "y"])

    def export(self, view: dict, indices: list[int], fmt: str) -> str:
        from backends.corpora.loaders import export_rows

        if not indices:
            raise InputError("nothing is selected: draw a lasso or box on the map first, or search")
        out_dir = tempfile.mkdtemp(prefix="atlas-export-")
        return export_rows(self.b.corpus(view["corpus"]), indices, self._xy(view), fmt, out_dir)


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


# ----------------------------------------------------------------------------------------
# Layout and wiring


def build_atlas(backends: Backends):


    from app.components.scatter import scatter_map

    svc = AtlasService(backends)
    names = backends.corpus_names()
    first = backends.settings.default_corpus if backends.settings.default_corpus in names else names[0]
    preloaded = [k for k in backends.user_corpus_keys()]
    choices = preloaded + names
    start = preloaded[0] if preloaded else first


    # -- handlers ----------------------------------------------------------------------
    def corpus_info(key: str) -> str:
        c = backends.corpus(key)
        notes = "".join(f"\n- {n}" for n in c.notes[:8])
        return (f"**{c.name}**: {len(c):,} items × {c.dim} dimensions; metadata: "
                f"{', '.join(c.metadata_columns()) or '(none)'}" + (f"\n\nLoader notes:{notes}" if notes else ""))

    def default_color(key: str, current: str | None = None) -> str:
        """The column the map is coloured by when a corpus opens: `label` if there is one, else the
        first column with 2 to MAX_DEFAULT_CLASSES values (the h-space corpus's first column is its
        300 distinct prompts, whose legend squeezed the map to a strip), else none."""
        corpus = backends.corpus(key)
        cols = corpus.metadata_columns()
        if current in cols or current == "(none)":
            return current
        if "label" in cols:
            return "label"
        for c in cols:
            if 2 <= corpus.meta[c].nunique() <= MAX_DEFAULT_CLASSES:
                return c
        return "(none)"

    def no_neighbours(key: str):
        """The neighbours table before an item is clicked, with this corpus's columns."""
        return empty_table(list(NEIGHBOUR_COLUMNS) + backends.corpus(key).metadata_columns()[:6])

    def color_choices(key: str, current: str | None = None):
        return gr.update(choices=["(none)"] + backends.corpus(key).metadata_columns(), value=default_color(key, current))

    @guard
    def open_corpus(key, method, n_neighbors, min_dist, metric, progress=gr.Progress()):
        progress(0.0, desc=f"loading {key}")
        view = svc.project(key, method, n_neighbors, min_dist, metric,
                           progress=lambda f, m: progress(f, desc=m))
        color = default_color(key)
        return (view, svc.payload(view, color), corpus_info(key), color_choices(key, color),
                [], None, "", [], no_neighbours(key), NO_SELECTION, empty_table(SELECTION_COLUMNS), "")

    @guard
    def upload(files, method, n_neighbors, min_dist, metric, progress=gr.Progress()):
        if not files:
            raise InputError("no file was uploaded")
        paths = [f if isinstance(f, str) else f.name for f in (files if isinstance(files, list) else [files])]
        progress(0.0, desc="reading upload")
        key = backends.add_path(paths if len(paths) > 1 else paths[0])
        outs = open_corpus(key, method, n_neighbors, min_dist, metric, progress)
        return (gr.update(choices=backends.user_corpus_keys() + names, value=key),) + outs

    @guard
    def reproject(view, method, n_neighbors, min_dist, metric, color_by, progress=gr.Progress()):
        new = svc.project(view["corpus"], method, n_neighbors, min_dist, metric,
                          progress=lambda f, m: progress(f, desc=m))
        return new, svc.payload(new, color_by)

    @guard
    def recolor(view, color_by):
        return svc.payload(view, color_by)

    def show_item(view, item: int, k: int):
        key = view["corpus"]
        corpus = backends.corpus(key)
        item_id = corpus.meta["id"].iat[item]
        rows = svc.neighbours(key, item_id, k)
        meta = corpus.meta.iloc[item].to_dict()
        text = f"\n\n{corpus.texts[item]}" if corpus.texts is not None else ""
        md = "**Selected:** " + " · ".join(f"{c}={_plain(v)}" for c, v in meta.items()) + text
        image = enlarge(corpus.images[item], 160) if corpus.images is not None else None
        gallery = [(enlarge(corpus.images[r["index"]], 96), f"{r['id']} · d={r['distance']:.3f}") for r in rows] \
            if corpus.images is not None else []
        import pandas as pd

        table = pd.DataFrame(rows).drop(columns=["index"]) if rows else no_neighbours(key)
        view = {**view, "highlight": [item] + [r["index"] for r in rows]}
        return view, image, md, gallery, table, item_id

    @guard
    def on_point_click(view, k, color_by, evt: gr.EventData):
        data = getattr(evt, "_data", None) or {}
        item = int(data.get("index", -1))
        if item < 0:
            raise InputError("click landed on no point")
        view, image, md, gallery, table, item_id = show_item(view, item, k)
        return view, svc.patch(view, color_by), image, md, gallery, table, item_id

    @guard
    def on_select(view, color_by, evt: gr.EventData):
        data = getattr(evt, "_data", None) or {}
        indices = [int(i) for i in data.get("indices", [])]
        view = {**view, "selected": indices}
        df = svc.rows(view, indices)
        return view, f"**{len(indices):,}** items selected", df.head(MAX_TABLE_ROWS), indices

    def shown(view, chosen):
        """The corpus on the map; a search made while another chosen corpus is still loading would
        run on the old one, so it is refused with a message saying so."""
        if chosen and view and chosen != view.get("corpus"):
            raise InputError(f"'{chosen}' is still loading (its map is not drawn yet): search again in a moment")
        return view["corpus"]

    @guard
    def do_search(view, query, regex, color_by, chosen=None):
        hits = svc.search(shown(view, chosen), query, regex)
        view = {**view, "highlight": [], "selected": hits}
        df = svc.rows(view, hits)
        return view, svc.patch(view, color_by), f"**{len(hits):,}** items match {query!r}", df.head(MAX_TABLE_ROWS), hits

    @guard
    def do_text_search(view, text, color_by, chosen=None):
        hits = [i for i, _ in svc.text_search(shown(view, chosen), text, 50)]
        view = {**view, "highlight": [], "selected": hits}
        df = svc.rows(view, hits)
        return view, svc.patch(view, color_by), f"**{len(hits)}** items nearest to {text!r}", df.head(MAX_TABLE_ROWS), hits

    @guard
    def do_more_like_this(view, item_id, color_by):
        if not item_id:
            raise InputError("no item is selected: click a point on the map first")
        hits = svc.more_like_this(view["corpus"], item_id, 50)
        view = {**view, "selected": hits}
        df = svc.rows(view, hits)
        return view, svc.patch(view, color_by), f"**{len(hits)}** items like {item_id}", df.head(MAX_TABLE_ROWS), hits

    @guard
    def do_axes(view, xa, xb, ya, yb, color_by):
        new = svc.custom_axes(view["corpus"], xa, xb, ya, yb)
        return new, svc.payload(new, color_by)

    @guard
    def do_export(view, indices, fmt):
        return svc.export(view, indices or [], fmt)

    # -- layout ------------------------------------------------------------------------
    view = gr.State({})
    selection = gr.State([])
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            corpus_dd = gr.Dropdown(choices=choices, value=start, label="Corpus", elem_id="atlas-corpus")
            files = gr.File(label="Upload a corpus (npy, parquet, csv, vectors.tsv + metadata.tsv, zip of images)",
                            file_count="multiple", height=200)
            info = gr.Markdown(elem_id="atlas-info")
            with gr.Accordion("Projection", open=False):
                method = gr.Radio(["umap", "pca"], value="umap", label="Method")
                n_neighbors = gr.Slider(2, 100, value=15, step=1, label="n_neighbors")
                min_dist = gr.Slider(0.0, 1.0, value=0.1, step=0.01, label="min_dist")
                metric = gr.Radio(["cosine", "euclidean"], value="cosine", label="Metric")
                project_btn = gr.Button("Project", variant="primary")
            color_by = gr.Dropdown(choices=["(none)"], value="(none)", label="Colour by", elem_id="atlas-color")
            with gr.Group():
                query = gr.Textbox(label="Search metadata", placeholder="label=3, or any text", elem_id="atlas-query")
                regex = gr.Checkbox(label="regular expression", value=False)
                search_btn = gr.Button("Search")
            with gr.Group():
                text_q = gr.Textbox(label="Search by meaning (aligned text encoder)", placeholder="red triangles",
                                    elem_id="atlas-text-query")
                text_btn = gr.Button("Find")
            with gr.Accordion("Custom axes", open=False):
                gr.Markdown("x = similarity to group A − similarity to group B (ids or a search like label=0).")
                xa = gr.Textbox(label="x: A")
                xb = gr.Textbox(label="x: B")
                ya = gr.Textbox(label="y: A (optional)")
                yb = gr.Textbox(label="y: B (optional)")
                axes_btn = gr.Button("Apply axes")
        with gr.Column(scale=3, min_width=420):
            plot = scatter_map(height=600, elem_id="atlas-map")
        with gr.Column(scale=2, min_width=300):
            item_image = gr.Image(label="Selected item", height=160, interactive=False, elem_id="atlas-item-image")
            item_md = gr.Markdown(elem_id="atlas-item")
            item_id = gr.Textbox(label="Selected id", interactive=False, elem_id="atlas-item-id")
            k = gr.Slider(1, 50, value=K_DEFAULT, step=1, label="Neighbours (k, original space)")
            gallery = gr.Gallery(label="Nearest neighbours", columns=4, height=220, object_fit="contain",
                                 fit_columns=False, elem_id="atlas-neighbours")
            neighbours_table = gr.Dataframe(empty_table(NEIGHBOUR_COLUMNS), label="Neighbours", interactive=False,
                                            max_height=220, elem_id="atlas-neighbours-table")
            more_btn = gr.Button("More like this")
            sel_md = gr.Markdown(NO_SELECTION, elem_id="atlas-selection")
            sel_table = gr.Dataframe(empty_table(SELECTION_COLUMNS), label="Selection", interactive=False,
                                     max_height=260)
            with gr.Row():
                fmt = gr.Radio(list(EXPORT_FORMATS), value="csv", label="Export format")
                export_btn = gr.Button("Export selection")
            export_file = gr.File(label="Export", interactive=False)

    # -- wiring ------------------------------------------------------------------------
    proj_inputs = [method, n_neighbors, min_dist, metric]
    # opening a corpus also clears what was selected in the previous one
    open_outputs = [view, plot, info, color_by, gallery, item_image, item_md, selection, neighbours_table, sel_md,
                    sel_table, item_id]
    corpus_dd.input(open_corpus, [corpus_dd] + proj_inputs, open_outputs, api_visibility="undocumented",
                    concurrency_id="atlas-heavy")
    files.upload(upload, [files] + proj_inputs, [corpus_dd] + open_outputs, api_visibility="undocumented",
                 concurrency_id="atlas-heavy")
    project_btn.click(reproject, [view] + proj_inputs + [color_by], [view, plot], api_visibility="undocumented",
                      concurrency_id="atlas-heavy")
    color_by.input(recolor, [view, color_by], plot, api_visibility="undocumented")
    # columns added since the corpus was opened (e.g. cluster labels from the Clusters tab) show up on focus
    color_by.focus(lambda v, cur: color_choices(v["corpus"], cur) if v else gr.update(), [view, color_by], color_by,
                   api_visibility="undocumented", queue=False)
    plot.point_click(on_point_click, [view, k, color_by],
                     [view, plot, item_image, item_md, gallery, neighbours_table, item_id],
                     api_visibility="undocumented", trigger_mode="always_last")
    plot.points_selected(on_select, [view, color_by], [view, sel_md, sel_table, selection],
                         api_visibility="undocumented", trigger_mode="always_last")
    search_btn.click(do_search, [view, query, regex, color_by, corpus_dd], [view, plot, sel_md, sel_table, selection],
                     api_visibility="undocumented")
    query.submit(do_search, [view, query, regex, color_by, corpus_dd], [view, plot, sel_md, sel_table, selection],
                 api_visibility="undocumented")
    for trig in (text_btn.click, text_q.submit):
        trig(do_text_search, [view, text_q, color_by, corpus_dd], [view, plot, sel_md, sel_table, selection],
             api_visibility="undocumented")
    more_btn.click(do_more_like_this, [view, item_id, color_by], [view, plot, sel_md, sel_table, selection],
                   api_visibility="undocumented")
    axes_btn.click(do_axes, [view, xa, xb, ya, yb, color_by], [view, plot], api_visibility="undocumented")
    export_btn.click(do_export, [view, selection, fmt], export_file, api_visibility="undocumented")

    # Initial map when the page loads (cached after the first visitor).
    def initial(method_v, nn, md, met):
        return open_corpus(start, method_v, nn, md, met)

    _register_load(plot, initial, proj_inputs, open_outputs)

    # -- API endpoints (what gradio_client calls; the browser uses the events above) ----
    _register_api(svc, api_guard)
    return svc


def _register_load(plot, fn, inputs, outputs):


    demo = gr.context.Context.root_block
    demo.load(fn, inputs, outputs, api_visibility="undocumented", concurrency_id="atlas-heavy")


def _register_api(svc: AtlasService, guard):


    def atlas_corpora() -> list[str]:
        """Corpora that can be opened: bundled names and this server's uploads."""
        return svc.b.user_corpus_keys() + svc.b.corpus_names()

    def atlas_upload(file: FileData) -> str:
        """Upload a corpus file (gradio_client: handle_file(path)); returns the key to open it by."""
        return svc.b.add_path(uploaded_path(file))

    def atlas_project(corpus: str, method: str = "umap", n_neighbors: int = 15, min_dist: float = 0.1,
                      metric: str = "cosine") -> dict:
        """2-D coordinates of every item: {"ids": [...], "x": [...], "y": [...]}."""
        view = svc.project(corpus, method, n_neighbors, min_dist, metric)
        xy = svc._xy(view)
        return {"ids": svc.b.corpus(corpus).meta["id"].tolist(), "x": xy[:, 0].tolist(), "y": xy[:, 1].tolist()}

    def atlas_neighbours(corpus: str, item_id: str, k: int = K_DEFAULT, metric: str = "cosine") -> list[dict]:
        """The k nearest neighbours of an item in the original vector space, with distances."""
        return svc.neighbours(corpus, item_id, k, metric)

    def atlas_search(corpus: str, query: str, regex: bool = False) -> list[str]:
        """Ids of items whose metadata matches the query (substring, col=value, or a regex)."""
        ids = svc.b.corpus(corpus).meta["id"]
        return [ids.iat[i] for i in svc.search(corpus, query, regex)]

    def atlas_text_search(corpus: str, text: str, k: int = 50) -> list[dict]:
        """Items nearest to a free-text query ("red triangles") in the corpus's space, with cosine distances."""
        ids = svc.b.corpus(corpus).meta["id"]
        return [{"id": ids.iat[i], "distance": round(d, 5)} for i, d in svc.text_search(corpus, text, k)]

    def atlas_more_like_this(corpus: str, item_id: str, k: int = 50) -> list[str]:
        """The item and its k nearest neighbours, as ids."""
        ids = svc.b.corpus(corpus).meta["id"]
        return [ids.iat[i] for i in svc.more_like_this(corpus, item_id, k)]

    def atlas_custom_axes(corpus: str, x_a: str, x_b: str = "", y_a: str = "", y_b: str = "") -> dict:
        """Coordinates on Embedding-Projector-style custom axes."""
        view = svc.custom_axes(corpus, x_a, x_b, y_a, y_b)
        xy = svc._xy(view)
        return {"ids": svc.b.corpus(corpus).meta["id"].tolist(), "x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(),
                "axes": view["axes"]}

    def atlas_export(corpus: str, item_ids: list[str], fmt: str = "csv", method: str = "umap") -> FileData:
        """Export items (id, metadata, 2-D coordinates of the default map) as csv, parquet or jsonl."""
        view = svc.project(corpus, method, 15, 0.1, "cosine")
        idx = [svc.item_index(corpus, i) for i in item_ids]
        return FileData(path=svc.export(view, idx, fmt))

    for fn in (atlas_corpora, atlas_upload, atlas_project, atlas_neighbours, atlas_search, atlas_text_search,
               atlas_more_like_this, atlas_custom_axes, atlas_export):
        gr.api(guard(fn), api_name=fn.__name__, concurrency_id="atlas-api")
