"""Clusters tab: the layout, event wiring and named API endpoints of app/services/clusters.py (what the
tab does): find clusters in a corpus, see how good they are, name them, and use them.

The view state is a small dict {"corpus": key, "run": run id}. Named API endpoints: clusters_run,
clusters_estimate_k, clusters_names, clusters_metrics, clusters_gallery, clusters_attach,
clusters_sample_labels, clusters_propagate, clusters_more_like_this (needs the Shapes generator and
encoder weights).
"""
from __future__ import annotations

import gradio as gr
import numpy as np
from gradio.data_classes import FileData

from app.components.display import enlarge
from app.components.errors import api_guard, guard
from app.components.tables import empty_table
from app.services.clusters import (
    CLUSTER_COLUMNS,
    CONFUSION_COLUMNS,
    GALLERY_SIZE,
    PROPAGATION_COLUMNS,
    SPACES,
    ClustersService,
    cluster_table,
    curve_note,
    propagation_table,
)
from backends.errors import InputError
from backends.registry import Backends

SPACE_HELP = ("original vectors · PCA or UMAP reduction to `dims` · the Atlas 2-D map · "
              "goal: similarity to the descriptions of the goal's factor (Shapes)")


def build_clusters(backends: Backends):
    from app.components.scatter import scatter_map

    svc = ClustersService(backends)
    names = backends.corpus_names()
    start = backends.settings.default_corpus if backends.settings.default_corpus in names else names[0]

    # -- pure presentation helpers --------------------------------------------------------
    def curve_figure(curve: dict | None, note: str = "", k_given: int = 0):
        """The k-estimation curve with its best k (and the k given, when another); with no curve, the
        chart says why (k was given, or HDBSCAN chose it) instead of sitting empty."""
        import textwrap

        import plotly.graph_objects as go

        fig = go.Figure()
        if curve:
            fig.add_trace(go.Scatter(x=curve["k"], y=curve["score"], mode="lines+markers", name=curve["estimator"]))
            best = curve["k"].index(curve["best"])
            fig.add_trace(go.Scatter(x=[curve["best"]], y=[curve["score"][best]], mode="markers",
                                     marker=dict(size=14, color="#d62728"), name=f"best k = {curve['best']}"))
            if k_given and k_given != curve["best"] and k_given in curve["k"]:
                fig.add_trace(go.Scatter(x=[k_given], y=[curve["score"][curve["k"].index(k_given)]], mode="markers",
                                         marker=dict(size=14, color="#111", symbol="diamond-open", line=dict(width=2)),
                                         name=f"k = {k_given} given"))
            ylabel = "silhouette" if curve["estimator"] == "silhouette" else "eigengap λ(k+1) − λ(k)"
            fig.update_layout(xaxis_title="k", yaxis_title=ylabel)
        elif note:
            fig.add_annotation(text="<br>".join(textwrap.wrap(note, 48)), x=0.5, y=0.5, xref="paper", yref="paper",
                               showarrow=False, font=dict(size=13, color="#555"))
            fig.update_xaxes(visible=False)
            fig.update_yaxes(visible=False)
            fig.update_layout(plot_bgcolor="rgba(0,0,0,0)")
        fig.update_layout(height=240, margin=dict(l=40, r=10, t=30, b=40), title="Choosing k",
                          showlegend=bool(curve), legend=dict(orientation="h", y=1.15))
        return fig

    def metrics_md(s: dict) -> str:
        lines = [f"**{s['k']} clusters** · {s['method']} on {s['space']} · silhouette "
                 f"{_fmt(s['silhouette'])} (original vectors)"
                 + (f", {_fmt(s['silhouette_space'])} in the clustering space" if s["space"] != "original" else "")
                 + (f" · noise {s['noise_fraction']:.0%}" if s["noise_fraction"] else "")
                 + f" · {s['seconds']:.1f} s"]
        if s["metrics"]:
            lines.append("\n| against | NMI | ARI | purity | classes |\n|---|---|---|---|---|")
            for col, m in s["metrics"].items():
                lines.append(f"| {col} | {m['nmi']:.3f} | {m['ari']:.3f} | {m['purity']:.3f} | {m['n_classes']} |")
        for note in s["notes"]:
            lines.append(f"\n- {note}")
        return "\n".join(lines)

    def gallery_items(key: str, run_id: str, cluster: int):
        corpus = backends.corpus(key)
        idx = svc.members(run_id, cluster, GALLERY_SIZE)
        if corpus.images is None:
            ids = corpus.meta["id"]
            return [], "\n".join(f"- {ids.iat[i]}" + (f": {corpus.texts[i][:120]}" if corpus.texts else "")
                                 for i in idx)
        return [(enlarge(corpus.images[i], 96), str(corpus.meta["id"].iat[i])) for i in idx], ""

    def overview(key: str, run_id: str, rows: list[dict]):
        corpus = backends.corpus(key)
        if corpus.images is None:
            return []
        return [(enlarge(corpus.images[svc.members(run_id, r["cluster"], 1)[0]], 96), f"{r['cluster']}: {r['name']}")
                for r in rows[:40]]

    # -- handlers ----------------------------------------------------------------------------
    @guard
    def do_run(key, method, k, space, dims, metric, mcs, seed, estimator, k_min, k_max, goal,
               progress=gr.Progress()):
        run_id, res = svc.run(key, method, int(k), space, int(dims), metric, int(mcs), int(seed), estimator,
                              int(k_min), int(k_max), goal or "", progress=lambda f, m: progress(f, desc=m))
        s = svc.summary(run_id)
        rows = svc.names(run_id, goal or "")
        choices = [(f"{r['cluster']}: {r['name']} ({r['size']})", r["cluster"]) for r in rows]
        if res.noise_fraction:
            choices.append((f"noise ({int((res.labels < 0).sum())})", -1))
        gallery, listing = gallery_items(key, run_id, 0) if rows else ([], "")
        cols = backends.corpus(key).metadata_columns()
        factor_cols = list(s["metrics"])
        view = {"corpus": key, "run": run_id}
        curve_data = svc.curve(run_id) if method != "hdbscan" else None
        note = curve_note(method, int(k), res.k, int(k_min), int(k_max), estimated=curve_data is not None)
        return (view, svc.map_payload(key, res.labels, "cluster", f"{res.k} clusters · {method} on {space}"),
                curve_figure(curve_data, note, int(k)), metrics_md(s), cluster_table(rows), overview(key, run_id, rows),
                gr.update(choices=choices, value=0 if rows else None), gallery, listing,
                gr.update(choices=cols, value=factor_cols[0] if factor_cols else (cols[0] if cols else None)))

    @guard
    def do_estimate(key, method, space, dims, metric, estimator, k_min, k_max, goal, progress=gr.Progress()):
        curve = svc.estimate_k(key, int(k_min), int(k_max), estimator, method, space, int(dims), metric, goal or "",
                               progress=lambda f, m: progress(f, desc=m))
        return curve_figure(curve), gr.update(value=curve["best"])

    @guard
    def do_names(view, goal):
        rows = svc.names(view.get("run", ""), goal or "")
        return cluster_table(rows), overview(view["corpus"], view["run"], rows)

    @guard
    def do_gallery(view, cluster):
        if cluster is None or not view.get("run"):
            return [], ""
        return gallery_items(view["corpus"], view["run"], int(cluster))

    @guard
    def do_confusion(view, column):
        if not view.get("run") or not column:
            return empty_table(CONFUSION_COLUMNS)
        return svc.confusion(view["run"], column)

    @guard
    def do_attach(view, column):
        name = svc.attach(view.get("run", ""), column or "cluster")
        return (f"Added metadata column **{name}** to {view['corpus']}: in the Atlas tab, reopen the corpus and "
                f"choose it under *Colour by*.")

    @guard
    def do_sample(key, column, per_class):
        return svc.sample_labels(key, column, int(per_class))

    @guard
    def do_propagate(key, labels, method, space, truth, progress=gr.Progress()):
        out = svc.propagate(key, labels, method, space, truth or "", progress=lambda f, m: progress(f, desc=m))
        md = (f"**{out['n_labelled']}** labels → all {len(out['predictions']):,} items labelled by {method} on {space}"
              + (f" · accuracy on the others against *{truth}*: **{out['accuracy']:.1%}**"
                 if out["accuracy"] is not None else ""))
        # its own map beside the button: the cluster map and tables above keep describing the clusters
        return (md, propagation_table(out, labels),
                svc.map_payload(key, np.asarray(out["predictions"]), "predicted",
                                f"few-shot labels ({method} on {space}) · {out['n_labelled']} given"))

    @guard
    def do_more(view, cluster, n):
        images, prompt = svc.more_like_this(view.get("run", ""), int(cluster if cluster is not None else 0), int(n))
        return [(enlarge(img, 96), prompt) for img in images]

    def corpus_changed(key):
        try:
            cols = backends.corpus(key).metadata_columns()
        except (InputError, FileNotFoundError) as exc:
            raise gr.Error(str(exc)) from None
        from backends.clusters.clustering import factor_columns

        fc = factor_columns(backends.corpus(key).meta)
        first = fc[0] if fc else (cols[0] if cols else None)
        return gr.update(choices=cols, value=first), gr.update(choices=[""] + cols, value=first or "")

    # -- layout --------------------------------------------------------------------------------
    view = gr.State({})
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            corpus_dd = gr.Dropdown(choices=backends.corpus_choices(), value=start, label="Corpus",
                                    elem_id="clusters-corpus")
            method = gr.Radio(["kmeans", "hdbscan", "agglomerative"], value="kmeans", label="Method")
            k = gr.Slider(0, 50, value=0, step=1, label="k (0 = estimate)", elem_id="clusters-k")
            space = gr.Radio(list(SPACES), value="original", label="Cluster in", info=SPACE_HELP)
            goal = gr.Textbox(label="Goal (optional)", placeholder="group by colour", elem_id="clusters-goal")
            run_btn = gr.Button("Find clusters", variant="primary", elem_id="clusters-run")
            with gr.Accordion("Parameters", open=False):
                metric = gr.Radio(["cosine", "euclidean"], value="cosine", label="Metric")
                dims = gr.Slider(2, 50, value=10, step=1, label="dims (PCA / UMAP reduction)")
                estimator = gr.Radio(["silhouette", "eigengap"], value="silhouette", label="Estimate k by")
                with gr.Row():
                    k_min = gr.Number(2, label="k from", precision=0)
                    k_max = gr.Number(15, label="k to", precision=0)
                mcs = gr.Slider(2, 200, value=10, step=1, label="HDBSCAN min_cluster_size")
                seed = gr.Number(0, label="seed", precision=0)
                est_btn = gr.Button("Estimate k")
        with gr.Column(scale=3, min_width=420):
            plot = scatter_map(height=480, elem_id="clusters-map")
            metrics = gr.Markdown(elem_id="clusters-metrics")
            # cells wrap (headers only between words: APP_CSS), so the table fits its column
            tbl = gr.Dataframe(empty_table(CLUSTER_COLUMNS), label="Clusters", interactive=False, max_height=300, wrap=True,
                               column_widths=["14%", "11%", "31%", "31%", "13%"],
                               elem_id="clusters-table")
        with gr.Column(scale=2, min_width=300):
            curve = gr.Plot(label="k estimation", elem_id="clusters-curve")
            names_btn = gr.Button("Rename with goal")
            over = gr.Gallery(label="One typical item per cluster", columns=4, height=170, object_fit="contain",
                              fit_columns=False)
            cluster_dd = gr.Dropdown(choices=[], label="Cluster", elem_id="clusters-pick")
            gallery = gr.Gallery(label="Most typical members", columns=4, height=200, object_fit="contain",
                                 fit_columns=False, elem_id="clusters-gallery")
            listing = gr.Markdown()
            with gr.Row():
                conf_col = gr.Dropdown(choices=[], label="Confusion against")
                attach_col = gr.Textbox("cluster", label="Atlas column name")
            conf_tbl = gr.Dataframe(empty_table(CONFUSION_COLUMNS), label="Clusters × classes", interactive=False,
                                    max_height=220)
            attach_btn = gr.Button("Colour the Atlas by these clusters")
            attach_md = gr.Markdown()
            with gr.Accordion("More like this cluster (Shapes generator)", open=False):
                more_n = gr.Slider(1, 16, value=8, step=1, label="images")
                more_btn = gr.Button("Generate")
                more_gallery = gr.Gallery(columns=4, height=160, object_fit="contain", fit_columns=False)
    with gr.Accordion("Few-shot labelling: label a few items, propagate to all", open=False):
        with gr.Row():
            with gr.Column(scale=2, min_width=240):
                labels_box = gr.Textbox(label="Labels (one 'id=label' per line)", lines=6, max_lines=12,
                                        elem_id="clusters-labels")
                with gr.Row():
                    sample_col = gr.Dropdown(choices=[], label="…or sample from column", elem_id="clusters-sample-col")
                    per_class = gr.Slider(1, 20, value=5, step=1, label="per class")
                sample_btn = gr.Button("Sample", elem_id="clusters-sample")
            with gr.Column(scale=2, min_width=240):
                prop_method = gr.Radio(["spreading", "kmeans", "opta"], value="spreading", label="Propagation",
                                       info="label spreading on the FAISS kNN graph, k-means seeded by the labels, "
                                            "or OpTA (BECLR: class prototypes aligned to the items by optimal transport)")
                prop_space = gr.Radio(["original", "pca", "umap"], value="original", label="Space")
                truth = gr.Dropdown(choices=[""], value="", label="True labels (for accuracy)")
                prop_btn = gr.Button("Propagate", variant="primary", elem_id="clusters-propagate")
                prop_md = gr.Markdown(elem_id="clusters-prop-md")
                prop_tbl = gr.Dataframe(empty_table(PROPAGATION_COLUMNS), label="Labels given and predicted",
                                        interactive=False, max_height=220, elem_id="clusters-prop-table")
            with gr.Column(scale=3, min_width=360):
                # the result beside its button, on its own map: the cluster map at the top keeps the clusters
                prop_plot = scatter_map(height=420, elem_id="clusters-prop-map")

    # -- wiring --------------------------------------------------------------------------------
    run_inputs = [corpus_dd, method, k, space, dims, metric, mcs, seed, estimator, k_min, k_max, goal]
    run_outputs = [view, plot, curve, metrics, tbl, over, cluster_dd, gallery, listing, conf_col]
    run_btn.click(do_run, run_inputs, run_outputs, api_visibility="undocumented",
                  concurrency_id="model-clusters", concurrency_limit=1)
    est_btn.click(do_estimate, [corpus_dd, method, space, dims, metric, estimator, k_min, k_max, goal], [curve, k],
                  api_visibility="undocumented", concurrency_id="model-clusters", concurrency_limit=1)
    names_btn.click(do_names, [view, goal], [tbl, over], api_visibility="undocumented")
    cluster_dd.input(do_gallery, [view, cluster_dd], [gallery, listing], api_visibility="undocumented")
    conf_col.change(do_confusion, [view, conf_col], conf_tbl, api_visibility="undocumented")
    attach_btn.click(do_attach, [view, attach_col], attach_md, api_visibility="undocumented")
    corpus_dd.change(corpus_changed, corpus_dd, [sample_col, truth], api_visibility="undocumented")
    sample_btn.click(do_sample, [corpus_dd, sample_col, per_class], labels_box, api_visibility="undocumented")
    prop_btn.click(do_propagate, [corpus_dd, labels_box, prop_method, prop_space, truth], [prop_md, prop_tbl, prop_plot],
                   api_visibility="undocumented", concurrency_id="model-clusters", concurrency_limit=1)
    more_btn.click(do_more, [view, cluster_dd, more_n], more_gallery, api_visibility="undocumented",
                   concurrency_id="model-clusters", concurrency_limit=1)
    gr.context.Context.root_block.load(corpus_changed, corpus_dd, [sample_col, truth], api_visibility="undocumented")

    _register_api(svc, api_guard)
    return svc


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _register_api(svc: ClustersService, guard):
    def clusters_run(corpus: str, method: str = "kmeans", k: int = 0, space: str = "original", dims: int = 10,
                     metric: str = "cosine", min_cluster_size: int = 10, seed: int = 0,
                     estimator: str = "silhouette", k_min: int = 2, k_max: int = 15, goal: str = "") -> dict:
        """Cluster a corpus (k=0 estimates k).

        Returns {"run", "k", "labels", "ids", "sizes", "silhouette", "metrics", "curve", "notes", …}.
        """
        run_id, res = svc.run(corpus, method, k, space, dims, metric, min_cluster_size, seed, estimator, k_min,
                              k_max, goal)
        out = svc.summary(run_id)
        out["labels"] = res.labels.tolist()
        out["ids"] = svc.b.corpus(corpus).meta["id"].tolist()
        return out

    def clusters_estimate_k(corpus: str, k_min: int = 2, k_max: int = 15, estimator: str = "silhouette",
                            method: str = "kmeans", space: str = "original", dims: int = 10,
                            metric: str = "cosine") -> dict:
        """Score each k in k_min..k_max: {"k": [...], "score": [...], "estimator", "best"}."""
        return svc.estimate_k(corpus, k_min, k_max, estimator, method, space, dims, metric)

    def clusters_names(run: str, goal: str = "") -> list[dict]:
        """Per cluster: size, name, descriptions (text–image space), majority metadata, purity."""
        return svc.names(run, goal)

    def clusters_metrics(run: str) -> dict:
        """Silhouette and, per label/factor column, NMI / ARI / purity and the cluster × class confusion."""
        s = svc.summary(run)
        s["confusion"] = {c: svc.confusion(run, c).set_index("cluster").to_dict(orient="index")
                          for c in s["metrics"]}
        s["confusion"] = {c: {str(r): v for r, v in t.items()} for c, t in s["confusion"].items()}
        return s

    def clusters_gallery(run: str, cluster: int, n: int = GALLERY_SIZE) -> list[str]:
        """Ids of up to n members of a cluster, most typical first."""
        key, _, _ = svc.result(run)
        ids = svc.b.corpus(key).meta["id"]
        return [ids.iat[i] for i in svc.members(run, cluster, n)]

    def clusters_attach(run: str, column: str = "cluster") -> str:
        """Add the clusters as a metadata column (the Atlas can colour by it); returns the column name."""
        return svc.attach(run, column)

    def clusters_sample_labels(corpus: str, column: str, per_class: int = 5, seed: int = 0) -> str:
        """'id=label' lines for per_class random items of each class of a column (a simulated annotator)."""
        return svc.sample_labels(corpus, column, per_class, seed)

    def clusters_propagate(corpus: str, labels: str, method: str = "spreading", space: str = "original",
                           truth_column: str = "") -> dict:
        """Propagate a few 'id=label' lines to every item; accuracy on the others when truth_column is given."""
        out = svc.propagate(corpus, labels, method, space, truth_column)
        out["ids"] = svc.b.corpus(corpus).meta["id"].tolist()
        return out

    def clusters_more_like_this(run: str, cluster: int, n: int = 8, seed: int = 0) -> FileData:
        """n generated Shapes images like a cluster, as one PNG row.

        Prompt: the cluster's best description; of 3n samples, the n nearest the cluster's mean embedding are kept.
        """
        import tempfile

        from PIL import Image

        images, _prompt = svc.more_like_this(run, cluster, n, seed)
        path = tempfile.NamedTemporaryFile(prefix="clusters-more-", suffix=".png", delete=False).name
        Image.fromarray(np.concatenate(list(images), axis=1)).save(path)
        return FileData(path=path)

    for fn in (clusters_run, clusters_estimate_k, clusters_names, clusters_metrics, clusters_gallery,
               clusters_attach, clusters_sample_labels, clusters_propagate, clusters_more_like_this):
        gr.api(guard(fn), api_name=fn.__name__,
               concurrency_id=(cid := "model-clusters" if fn in (clusters_run, clusters_estimate_k, clusters_propagate,
                                                                   clusters_more_like_this) else "clusters-api"),
               concurrency_limit=1 if cid == "model-clusters" else "default")
