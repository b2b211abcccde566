"""Atlas tab: the layout and event wiring of app/services/atlas.py (what the tab does).

A 2-D map of any corpus with thumbnails, neighbours, search, selection and export. Per-user
state is the view dict (see app/services/atlas.py) and the selected row indices.

The map is one component for both renderers: Plotly up to 100,000 items, regl-scatterplot (WebGL, points
as a binary file) above (AtlasService.uses_gl says why); both send point_click {index} and
points_selected (indices, or a bitmask for large selections: indices_from_event), so the handlers are
the same.
"""
from __future__ import annotations

import gradio as gr
from gradio.data_classes import FileData

from app.components.display import enlarge
from app.components.errors import api_guard, guard
from app.components.files import uploaded_path
from app.components.scatter_gl import indices_from_event
from app.components.tables import empty_table
from app.services.atlas import EXPORT_FORMATS, K_DEFAULT, NEIGHBOUR_COLUMNS, SELECTION_COLUMNS, AtlasService
from backends.corpora.loaders import SCALINGS
from backends.errors import InputError
from backends.registry import Backends

MAX_TABLE_ROWS = 500
NO_SELECTION = "Draw a lasso or box on the map to select items."
PREVIEW_NOTE = ("\n\n**The map is PCA for now**: UMAP is being computed and replaces it when done; what you "
                "search or select meanwhile stays selected.")


def build_atlas(backends: Backends):
    from app.components.scatter import scatter_map

    svc = AtlasService(backends)
    names = backends.corpus_names()
    first = backends.settings.default_corpus if backends.settings.default_corpus in names else names[0]
    preloaded = backends.loaded_upload_keys()  # --data files open first; stored uploads are listed
    choices = backends.corpus_choices()  # (label, key): uploads as "wine.csv · 178 × 13"
    start = preloaded[0] if preloaded else first

    # -- handlers ----------------------------------------------------------------------
    def no_neighbours(key: str):
        """The neighbours table before an item is clicked, with this corpus's columns."""
        return empty_table(list(NEIGHBOUR_COLUMNS) + backends.corpus(key).metadata_columns()[:6])

    def color_choices(key: str, current: str | None = None):
        return gr.update(choices=svc.color_columns(key), value=svc.default_color(key, current))

    def opened(key, view, info):
        color = svc.default_color(key)
        # a new corpus starts clean: no selection, no search text, no custom-axes groups, no export file
        return (view, svc.payload(view, color), info, color_choices(key, color),
                [], None, "", [], no_neighbours(key), NO_SELECTION, empty_table(SELECTION_COLUMNS), "",
                "", "", "", "", "", "", None, gr.update(visible=str(key).startswith("upload:")))

    @guard
    def open_corpus(key, method, n_neighbors, min_dist, metric, progress=gr.Progress()):
        """The corpus's map at once: the one asked for when it is cached (or PCA), else a PCA map
        marked as a preview, which finish_map replaces when UMAP is computed."""
        progress(0.0, desc=f"loading {key}")
        if svc.map_is_ready(key, method, n_neighbors, min_dist, metric):
            view = svc.project(key, method, n_neighbors, min_dist, metric, progress=lambda f, m: progress(f, desc=m))
            return opened(key, view, svc.corpus_info(key))
        return opened(key, svc.preview(key), svc.corpus_info(key) + PREVIEW_NOTE)

    @guard
    def upload(files, scaling, method, n_neighbors, min_dist, metric, progress=gr.Progress()):
        if not files:
            raise InputError("no file was uploaded")
        paths = [f if isinstance(f, str) else f.name for f in (files if isinstance(files, list) else [files])]
        progress(0.0, desc="reading upload")
        key = backends.add_path(paths if len(paths) > 1 else paths[0], scaling=scaling or "auto")
        outs = open_corpus(key, method, n_neighbors, min_dist, metric, progress)
        return (gr.update(choices=backends.corpus_choices(), value=key),) + outs

    @guard
    def compute_map(view, method, n_neighbors, min_dist, metric, progress=gr.Progress()):
        """After a preview: UMAP into the cache, its progress shown in the corpus notes, the map
        left free to use meanwhile."""
        if not (view and view.get("preview")):
            return gr.skip(), None
        svc.project(view["corpus"], method, n_neighbors, min_dist, metric, progress=lambda f, m: progress(f, desc=m))
        return (svc.corpus_info(view["corpus"]) + "\n\nUMAP is done: drawing it.",
                {"corpus": view["corpus"], "params": [method, n_neighbors, min_dist, metric]})

    @guard
    def finish_map(view, computed, color_by):
        """The UMAP map in place of the preview (from the cache), with what was searched or selected on
        the preview meanwhile (the view as it is now, not as it was when UMAP started). The map is the
        one compute_map made (`computed`), even if the projection controls were changed meanwhile."""
        if not (view and view.get("preview") and computed and computed.get("corpus") == view["corpus"]):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()  # another corpus or map was opened meanwhile
        method, n_neighbors, min_dist, metric = computed["params"]
        new = svc.project(view["corpus"], method, n_neighbors, min_dist, metric)
        new = {**new, "highlight": view.get("highlight", []), "selected": view.get("selected", [])}
        return (new, svc.payload(new, color_by), svc.rows(new, new["selected"]).head(MAX_TABLE_ROWS),
                svc.corpus_info(view["corpus"]))

    @guard
    def reproject(view, method, n_neighbors, min_dist, metric, color_by, progress=gr.Progress()):
        new = svc.project(view["corpus"], method, n_neighbors, min_dist, metric,
                          progress=lambda f, m: progress(f, desc=m))
        new = {**new, "highlight": view.get("highlight", []), "selected": view.get("selected", [])}
        return new, svc.payload(new, color_by), svc.rows(new, new["selected"]).head(MAX_TABLE_ROWS)

    @guard
    def recolor(view, color_by):
        return svc.payload(view, color_by)

    def show_item(view, item: int, k: int):
        key = view["corpus"]
        corpus = backends.corpus(key)
        d = svc.item_details(key, item, k)
        item_id, rows = d["id"], d["neighbours"]
        text = f"\n\n{d['text']}" if d["text"] is not None else ""
        md = "**Selected:** " + " · ".join(f"{c}={v}" for c, v in d["meta"].items()) + text
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
        # a list from either map, or a bitmask from the GL map (large selections of large corpora)
        indices = indices_from_event(getattr(evt, "_data", None))
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
        # the search hits and the clicked item stay marked, and the table shows the new coordinates
        new = {**new, "highlight": view.get("highlight", []), "selected": view.get("selected", [])}
        sel = new["selected"]
        df = svc.rows(new, sel)
        return new, svc.payload(new, color_by), df.head(MAX_TABLE_ROWS)

    @guard
    def do_export(view, indices, fmt):
        return svc.export(view, indices or [], fmt)

    # -- layout ------------------------------------------------------------------------
    view = gr.State({})
    selection = gr.State([])
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            corpus_dd = gr.Dropdown(choices=choices, value=start, label="Corpus", elem_id="atlas-corpus")
            remove_btn = gr.Button("Remove this upload", size="sm", elem_id="atlas-remove",
                                   visible=str(start).startswith("upload:"))  # shown for uploads only
            files = gr.File(label="Upload a corpus (npy, parquet, csv, vectors.tsv + metadata.tsv, zip of images)",
                            file_count="multiple", height=200)
            # tables of numeric columns (CSV, Parquet) only; read when a file is uploaded
            scaling = gr.Radio(list(SCALINGS), value="auto", label="Scale numeric columns", elem_id="atlas-scaling",
                               info="tables of numeric columns: auto z-scores when column scales differ > 10×")
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
        with gr.Column(scale=4, min_width=480):
            plot = scatter_map(height=620, elem_id="atlas-map")
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    item_image = gr.Image(label="Selected item", height=160, interactive=False, elem_id="atlas-item-image", buttons=["download", "fullscreen"])
                    item_md = gr.Markdown(elem_id="atlas-item")
                    item_id = gr.Textbox(label="Selected id", interactive=False, elem_id="atlas-item-id")
                    k = gr.Slider(1, 50, value=K_DEFAULT, step=1, label="Neighbours (k, original space)")
                    gallery = gr.Gallery(label="Nearest neighbours", columns=4, height=220, object_fit="contain",
                                         fit_columns=False, elem_id="atlas-neighbours")
                    neighbours_table = gr.Dataframe(empty_table(NEIGHBOUR_COLUMNS), label="Neighbours", interactive=False,
                                                    max_height=220, elem_id="atlas-neighbours-table")
                    more_btn = gr.Button("More like this")
                with gr.Column(scale=1, min_width=300):
                    sel_md = gr.Markdown(NO_SELECTION, elem_id="atlas-selection")
                    sel_table = gr.Dataframe(empty_table(SELECTION_COLUMNS), label="Selection", interactive=False,
                                             max_height=260, elem_id="atlas-selection-table")
                    with gr.Row():
                        fmt = gr.Radio(list(EXPORT_FORMATS), value="csv", label="Export format")
                        export_btn = gr.Button("Export selection")
                    export_file = gr.File(label="Export", interactive=False)

    # -- wiring ------------------------------------------------------------------------
    proj_inputs = [method, n_neighbors, min_dist, metric]
    # opening a corpus also clears what was selected in the previous one
    open_outputs = [view, plot, info, color_by, gallery, item_image, item_md, selection, neighbours_table, sel_md,
                    sel_table, item_id, query, text_q, xa, xb, ya, yb, export_file, remove_btn]
    def then_finish(event):
        """After a map opens as a PCA preview: UMAP computed (progress in the notes, the map usable),
        then swapped in."""
        computed = gr.State(None)  # the corpus and params compute_map drew, for finish_map
        return event.then(compute_map, [view] + proj_inputs, [info, computed], api_visibility="undocumented",
                          concurrency_id="atlas-heavy").then(
            finish_map, [view, computed, color_by], [view, plot, sel_table, info], api_visibility="undocumented",
            concurrency_id="atlas-heavy")

    then_finish(corpus_dd.input(open_corpus, [corpus_dd] + proj_inputs, open_outputs, api_visibility="undocumented",
                                concurrency_id="atlas-heavy"))
    then_finish(files.upload(upload, [files, scaling] + proj_inputs, [corpus_dd] + open_outputs,
                             api_visibility="undocumented", concurrency_id="atlas-upload",
                             concurrency_limit=2))  # never ahead of map and neighbour events
    project_btn.click(reproject, [view] + proj_inputs + [color_by], [view, plot, sel_table], api_visibility="undocumented",
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
    axes_btn.click(do_axes, [view, xa, xb, ya, yb, color_by], [view, plot, sel_table], api_visibility="undocumented")
    export_btn.click(do_export, [view, selection, fmt], export_file, api_visibility="undocumented")

    @guard
    def remove_upload(key):
        backends.remove_upload(key)
        gr.Info(f"removed {key}")
        return gr.update(choices=backends.corpus_choices(), value=first)

    then_finish(remove_btn.click(remove_upload, corpus_dd, corpus_dd, api_visibility="undocumented").success(
        open_corpus, [corpus_dd] + proj_inputs, open_outputs, api_visibility="undocumented"))

    # Initial map when the page loads (cached after the first visitor); the corpus menu is read
    # again, so uploads made since the server started (or in another tab) are listed.
    gr.context.Context.root_block.load(lambda: gr.update(choices=backends.corpus_choices()), None, corpus_dd,
                                       api_visibility="undocumented", queue=False)

    def initial(method_v, nn, md, met):
        return open_corpus(start, method_v, nn, md, met)

    then_finish(_register_load(plot, initial, proj_inputs, open_outputs))

    # -- API endpoints (what gradio_client calls; the browser uses the events above) ----
    _register_api(svc, api_guard)
    return svc


def _register_load(plot, fn, inputs, outputs):
    demo = gr.context.Context.root_block
    return demo.load(fn, inputs, outputs, api_visibility="undocumented", concurrency_id="atlas-heavy")


def _register_api(svc: AtlasService, guard):
    def atlas_corpora() -> list[str]:
        """Corpora that can be opened: this server's uploads (kept across restarts) and the bundled names."""
        return svc.b.user_corpus_keys() + svc.b.corpus_names()

    def atlas_remove_upload(key: str) -> list[str]:
        """Remove an uploaded corpus (from memory and the server's disk); returns the corpora left."""
        svc.b.remove_upload(key)
        return atlas_corpora()

    def atlas_upload(file: FileData | list[FileData], scaling: str = "auto") -> str:
        """Upload a corpus (gradio_client: handle_file(path), or a list of them for files that go
        together: the Embedding Projector's [vectors.tsv, metadata.tsv], or several images); returns the key to
        open it by. scaling: for a table of numeric columns, "auto" (z-score when column scales
        differ by more than 10×), "z-score", "robust" ((x − median) / IQR) or "none"; the corpus
        notes say which."""
        files = file if isinstance(file, (list, tuple)) else [file]
        if not files:
            raise InputError("file: nothing was uploaded (an empty list)")
        paths = [uploaded_path(f, f"file {i + 1}" if len(files) > 1 else "file") for i, f in enumerate(files)]
        return svc.b.add_path(paths if len(paths) > 1 else paths[0], scaling=scaling)

    def atlas_project(corpus: str, method: str = "umap", n_neighbors: int = 15, min_dist: float = 0.1,
                      metric: str = "cosine") -> dict:
        """2-D coordinates of every item: {"ids": [...], "x": [...], "y": [...]}."""
        return svc.coordinates(svc.project(corpus, method, n_neighbors, min_dist, metric))

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
        return {**svc.coordinates(view), "axes": view["axes"]}

    def atlas_export(corpus: str, item_ids: list[str], fmt: str = "csv", method: str = "umap") -> FileData:
        """Export items (id, metadata, 2-D coordinates of the default map) as csv, parquet or jsonl."""
        view = svc.project(corpus, method, 15, 0.1, "cosine")
        idx = [svc.item_index(corpus, i) for i in item_ids]
        return FileData(path=svc.export(view, idx, fmt))

    # Uploads parse files (seconds, bounded by the loaders' limits) and projections may run UMAP: each has
    # its own queue, so the fast queries (neighbours, search, a cached map) never wait behind them.
    gr.api(guard(atlas_upload), api_name="atlas_upload", concurrency_id="atlas-upload", concurrency_limit=2)
    gr.api(guard(atlas_project), api_name="atlas_project", concurrency_id="atlas-project", concurrency_limit=1)
    for fn in (atlas_corpora, atlas_remove_upload, atlas_neighbours, atlas_search, atlas_text_search,
               atlas_more_like_this, atlas_custom_axes, atlas_export):
        gr.api(guard(fn), api_name=fn.__name__, concurrency_id="atlas-api", concurrency_limit=16)
