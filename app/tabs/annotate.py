"""Annotate tab: annotators mark the clusters they see in scatterplots; an admin runs the study.

Annotator flow: sign in (name + token; an unknown name is registered with its token only where the
admin opened sign-up for the task set) → for each
plot, pick a group ("cluster 1", …, "noise"), draw a lasso or box around points → undo → submit
or skip → the next plot. Keys: 1–9 group, 0 noise, N new group, U undo, B box, L lasso,
Enter submit, S skip.

Named API endpoints (gradio_client): annotate_task_sets, annotate_sign_in, annotate_submit,
annotate_skip, annotate_undo (token first), annotate_new_group, annotate_progress, and the admin
ones (annotate_admin_*; each takes the admin password first). A submission is
`annotate_submit(token, plot_id, groups)` with groups the JSON text {"cluster 1": [point ids], …,
"noise": [...]}; point ids are 0 … n-1 in the order of the plot's x/y. sign_in, submit and skip
return (status, plot, plot_id, groups): plot is the next plot's JSON (x, y, ids), plot_id is ""
when the task set is done. Bad input raises gr.Error with a message naming what was wrong.
Only the admin endpoints return other people's answers; an annotator sees and answers only the plot
the server handed to their token. Wrong passwords and tokens are limited per client and overall
(app/components/security.py).
"""
from __future__ import annotations

import json
import re
import time

import gradio as gr
import numpy as np

from app.components.errors import api_guard, guard
from app.components.scatter import PALETTE, scatter_map, scatter_payload
from app.components.security import auth_attempt, new_export_dir, serve_once
from app.components.tables import empty_table
from backends.clusters.annotations import (
    NOISE,
    UNASSIGNED,
    AnnotationStore,
    AuthError,
    check_password,
    get_store,
    group_names,
    new_token,
)
from backends.errors import InputError

UI_CLUSTERS = 9  # groups reachable from the radio and keys 1–9; the API accepts up to 20
# Sign-in/submit/skip share one queue group. SQLite serialises the commits (one fsync each), so
# more workers do not add write throughput; 8 lets the reads, JSON and next-plot work overlap with
# a commit (20 clients × 10 submits here: same ~28/s as 1 worker, p90 latency 1.0 s vs 1.3–2.3 s)
# while leaving Gradio's thread pool to the other tabs.
SUBMIT_CONCURRENCY = 8
EXPORT_FORMATS = ("jsonl", "csv", "parquet")
GROUP_COLORS = {**{f"cluster {k}": PALETTE[(k - 1) % len(PALETTE)] for k in range(1, 21)},
                NOISE: "#222222", UNASSIGNED: "#c9c9c9"}
CATEGORIES = group_names() + [UNASSIGNED]
# The admin tables' columns (what their handlers return); each table starts empty with them.
SETS_COLUMNS = ("task_set", "kind", "plots", "target", "sign_up", "created")
TOKEN_COLUMNS = ("name", "token")
PROGRESS_COLUMNS = ("plot_id", "position", "n_points", "answers", "skips", "mean_seconds", "target", "complete")
ANNOTATOR_COLUMNS = ("annotator", "answers", "skips", "mean_seconds", "last")
AGREEMENT_COLUMNS = ("plot_id", "position", "n_points", "annotators", "mean_pairwise_ari", "alpha_comembership",
                     "clusters_median", "clusters_min", "clusters_max")
LEADERBOARD_COLUMNS = ("method", "mean_ari", "plots")

KEYS_HTML = ('<div class="ann-keys">Keys: <b>1–9</b> group · <b>0</b> noise · <b>N</b> new group · '
             '<b>U</b> undo · <b>L</b>/<b>B</b> lasso/box · <b>Enter</b> submit · <b>S</b> skip</div>')
KEYS_JS = r"""
if (!window.__laAnnotateKeys) {
  window.__laAnnotateKeys = true;
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    const typing = t && ((t.tagName === 'INPUT' && !['radio', 'checkbox', 'button'].includes(t.type)) ||
                         t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable);
    if (typing || e.altKey || e.metaKey || (e.ctrlKey && e.key !== 'z')) return;
    const panel = document.getElementById('ann-panel');
    if (!panel || panel.offsetParent === null) return;  // the Annotate tab is not shown
    const click = id => { const el = document.getElementById(id); if (!el) return;
      (el.tagName === 'BUTTON' ? el : (el.querySelector('button') || el)).click(); e.preventDefault(); };
    const pick = (id, value) => { const el = document.getElementById(id);
      const inp = el && el.querySelector(`input[value="${value}"]`); if (inp) { inp.click(); e.preventDefault(); } };
    const k = e.key.toLowerCase();
    if (/^[1-9]$/.test(k)) pick('ann-group', 'cluster ' + k);
    else if (k === '0') pick('ann-group', 'noise');
    else if (k === 'u' || (e.ctrlKey && k === 'z')) click('ann-undo');
    else if (k === 'n') click('ann-new-group');
    else if (k === 'enter') click('ann-submit');
    else if (k === 's') click('ann-skip');
    else if (k === 'b') pick('ann-tool', 'box');
    else if (k === 'l') pick('ann-tool', 'lasso');
  });
}
"""
# The group legend of the plot has a fixed place from the first render on. Plotly shows a legend only
# once a second group has points, and then takes its width from the plot area: the points moved
# sideways under the annotator's next lasso. The scatter component builds the layout itself, so the
# Annotate plot's calls to Plotly.react get the legend always on, in a right margin wide enough for
# the longest group name ("unassigned") and clear of the toolbar at the right edge; only the div in
# #ann-plot is touched. (A layout option of app/components/scatter.py would do this without
# wrapping Plotly.react.)
LEGEND_MARGIN = 150
LEGEND_JS = r"""
if (!window.__laAnnotateLegend) {
  window.__laAnnotateLegend = true;
  const patch = (P) => {
    if (!P || !P.react || P.__laAnnotateLegend) return P;
    const react = P.react;
    P.react = function (gd, data, layout, config) {
      if (gd && gd.closest && gd.closest('#ann-plot') && layout) {
        layout = Object.assign({}, layout, {showlegend: true,
          margin: Object.assign({}, layout.margin || {}, {r: LEGEND_MARGIN}),
          legend: Object.assign({}, layout.legend || {}, {x: 1.02, xanchor: 'left', y: 1, yanchor: 'top'})});
      }
      return react.call(this, gd, data, layout, config);
    };
    P.__laAnnotateLegend = true;
    return P;
  };
  if (window.Plotly) patch(window.Plotly);
  else {  // plotly.js sets window.Plotly when its script runs, before anything draws with it
    let loaded;
    Object.defineProperty(window, 'Plotly', {configurable: true, enumerable: true,
      get: () => loaded, set: (v) => { loaded = patch(v); }});
  }
}
""".replace("LEGEND_MARGIN", str(LEGEND_MARGIN))
NEW_PLOT_SUMMARY = "Nothing selected yet: pick a group, then draw a lasso or box around its points."


# ---------------------------------------------------------------------------------------
# Pure functions: no gradio


def store_for(backends) -> AnnotationStore:
    """The store of this app's settings (one engine per database URL in the process)."""
    return get_store(backends.settings.annotations_url)


def labels_from_actions(actions: list, n_points: int) -> list[str]:
    """Replay the selection actions: later selections move points to their group."""
    labels = [UNASSIGNED] * n_points
    for group, idx in actions or []:
        for i in idx:
            if 0 <= int(i) < n_points:
                labels[int(i)] = group
    return labels


def groups_from_labels(labels: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, g in enumerate(labels):
        if g != UNASSIGNED:
            out.setdefault(g, []).append(i)
    order = {g: i for i, g in enumerate(CATEGORIES)}
    return {g: out[g] for g in sorted(out, key=order.__getitem__)}


def plot_payload(plot, labels: list[str] | None = None, *, tool: str = "lasso", title: str = "",
                 revision: str = "") -> str:
    """The scatter component's JSON with a fixed colour per group (the component's own colouring
    re-numbers categories as groups appear, so the colours are set here)."""
    n = plot.n_points
    labels = labels or [UNASSIGNED] * n
    payload = json.loads(scatter_payload(
        plot.xy, ids=[str(i) for i in range(n)], hover=[f"point {i}: {g}" for i, g in enumerate(labels)],
        title=title, dragmode="select" if tool == "box" else "lasso", point_size=8 if n < 500 else 6,
        uirevision=f"plot-{plot.id}-{revision}"))
    code = {g: i for i, g in enumerate(CATEGORIES)}
    colours = [GROUP_COLORS[g] for g in CATEGORIES]  # "colors": what the scatter draws with since 16bb7be
    payload.update({"color_cat": [code[g] for g in labels], "categories": CATEGORIES, "color_name": "group",
                    "palette": colours, "colors": colours, "outline": False})
    return json.dumps(payload, separators=(",", ":"))


def _summary(labels: list[str]) -> str:
    groups = groups_from_labels(labels)
    if not groups:
        return NEW_PLOT_SUMMARY
    parts = [f"**{g}**: {len(ids)}" for g, ids in groups.items()]
    left = sum(1 for g in labels if g == UNASSIGNED)
    return " · ".join(parts) + f" · unassigned: {left}"


# ---------------------------------------------------------------------------------------
# The tab


def build_annotate(backends):

    def store() -> AnnotationStore:
        return store_for(backends)

    def set_names() -> list[str]:
        return [t["name"] for t in store().task_sets()]

    # -- annotator handlers -------------------------------------------------------------
    def _progress_md(who, ts_id: int, ts_name: str, note: str = "") -> str:
        p = store().progress(who.id, ts_id)
        line = (f"**{who.name}** · task set **{ts_name}** · submitted {p['submitted']} · skipped {p['skipped']} · "
                f"remaining {p['remaining']} of {p['total']}")
        return (note + "\n\n" if note else "") + line

    def _show_next(who, ts_id: int, tool: str, note: str = ""):
        s = store()
        plot = s.next_plot(who.id, ts_id)
        ts_name = next((t["name"] for t in s.task_sets() if t["id"] == ts_id), str(ts_id))
        md = _progress_md(who, ts_id, ts_name, note)
        if plot is None:  # an empty plot, so the last one does not stay on screen
            done = scatter_payload(np.zeros((0, 2), np.float32), ids=[], title="All plots done", uirevision="done")
            return md + "\n\n**All plots in this task set are done. Thank you!**", done, "", "{}", []
        title = f"Plot {plot.position + 1} (id {plot.id}) · {plot.n_points} points"
        return md, plot_payload(plot, tool=tool, title=title), str(plot.id), "{}", []

    def _who(token: str):
        """The annotator holding this token (failed tokens are limited and logged)."""
        return auth_attempt("token", store().authenticate, token, failures=(AuthError,))

    def sign_in(name: str, token: str, task_set: str, tool: str = "lasso"):
        """Sign in (a new name is registered with its token where sign-up is open for the task set)
        and get the next plot of the task set. Returns (status, plot JSON, plot id, groups JSON)."""
        s = store()
        ts_id = s.task_set_id(task_set or "")
        who = auth_attempt("sign-in", s.sign_in, name, token, ts_id, failures=(AuthError,))
        return _show_next(who, ts_id, tool, note=f"Signed in as **{who.name}**.")

    def submit(token: str, plot_id: str, groups: str, tool: str = "lasso"):
        """Store the groups of one plot: groups is JSON {"cluster 1": [point ids], …, "noise": [...]}.
        Returns (status, next plot JSON, next plot id, groups JSON reset)."""
        s = store()
        who = _who(token)
        if not str(plot_id or "").strip():
            raise InputError("no plot is shown: sign in first")
        res = s.submit(who.id, plot_id, groups)
        plot = s.plot(plot_id)
        note = (f"Stored answer #{res.annotation_id} for plot {plot.id}." if res.created
                else f"Plot {plot.id} was already stored (answer #{res.annotation_id}); not duplicated.")
        return _show_next(who, plot.task_set_id, tool, note)

    def skip(token: str, plot_id: str, tool: str = "lasso"):
        """Skip a plot (recorded, so it is not shown again). Returns like annotate_submit."""
        s = store()
        who = _who(token)
        if not str(plot_id or "").strip():
            raise InputError("no plot is shown: sign in first")
        res = s.submit(who.id, plot_id, skipped=True)
        plot = s.plot(plot_id)
        return _show_next(who, plot.task_set_id, tool, f"Skipped plot {plot.id} (#{res.annotation_id}).")

    def progress(token: str, task_set: str) -> str:
        """Your own progress in a task set."""
        s = store()
        who = _who(token)
        ts_id = s.task_set_id(task_set or "")
        return _progress_md(who, ts_id, task_set)

    def _redraw(token: str, plot_id: str, actions: list, tool: str):
        plot = store().handed(_who(token).id, plot_id)  # only the plot handed to this token
        labels = labels_from_actions(actions, plot.n_points)
        title = f"Plot {plot.position + 1} (id {plot.id}) · {plot.n_points} points"
        payload = plot_payload(plot, labels, tool=tool, title=title, revision=str(len(actions)))
        return payload, json.dumps(groups_from_labels(labels)), _summary(labels)

    def on_select(token: str, actions: list, group: str, plot_id: str, tool: str, evt: gr.EventData):
        data = getattr(evt, "_data", None) or {}
        idx = [int(i) for i in data.get("indices", [])]
        if not idx or not str(plot_id or "").strip():
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        actions = list(actions or [])
        if actions and actions[-1] == [group, idx]:
            # plotly repeats plotly_selected for one lasso (on re-render); a repeat changes nothing
            # and must not become a second undo step
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        actions.append([group, idx])
        payload, groups, summary = _redraw(token, plot_id, actions, tool)
        return actions, payload, groups, summary

    def undo(token: str, actions: list, plot_id: str, tool: str = "lasso"):
        """Remove the last selection (of the plot handed to this token). Returns (actions, plot JSON,
        groups JSON, summary)."""
        actions = list(actions or [])[:-1]
        if not str(plot_id or "").strip():
            return actions, gr.skip(), "{}", "Nothing to undo."
        payload, groups, summary = _redraw(token, plot_id, actions, tool)
        return actions, payload, groups, summary

    def retool(token: str, actions: list, plot_id: str, tool: str):
        if not str(plot_id or "").strip():
            return gr.skip()
        return _redraw(token, plot_id, actions, tool)[0]

    def new_group(actions: list) -> str:
        """The first cluster name not used yet in this plot."""
        used = {g for g, _ in actions or []}
        for k in range(1, UI_CLUSTERS + 1):
            if f"cluster {k}" not in used:
                return f"cluster {k}"
        return f"cluster {UI_CLUSTERS}"

    # -- admin handlers -----------------------------------------------------------------
    def admin(password: str) -> AnnotationStore:
        auth_attempt("admin password", check_password, password, backends.settings.admin_password,
                     failures=(AuthError,))
        return store()

    def _sets_table(s: AnnotationStore):
        import pandas as pd

        rows = [{"task_set": t["name"], "kind": t["kind"], "plots": t["n_plots"], "target": t["target_annotators"],
                 "sign_up": "open" if t["signup_open"] else "closed",
                 "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(t["created_at"]))} for t in s.task_sets()]
        return pd.DataFrame(rows, columns=list(SETS_COLUMNS))

    def admin_create_synthetic(password: str, name: str, n_plots: float, points_min: float, points_max: float,
                               clusters_min: float, clusters_max: float, separation_min: float, separation_max: float,
                               noise_max: float, target: float, seed: float, density_max: float = 4.0):
        """Create a task set of Gaussian-mixture plots. Returns (message, task sets table)."""
        from backends.clusters.perception import synthetic_task_specs

        s = admin(password)
        for arg, lo, hi in (("points", points_min, points_max), ("clusters", clusters_min, clusters_max),
                            ("separation", separation_min, separation_max)):
            if lo > hi:
                raise InputError(f"{arg}: the minimum {lo} is above the maximum {hi}")
        specs = synthetic_task_specs(int(n_plots), seed=int(seed), points=(int(points_min), int(points_max)),
                                     clusters=(int(clusters_min), int(clusters_max)),
                                     separation=(float(separation_min), float(separation_max)),
                                     noise_fraction=(0.0, float(noise_max)),
                                     density_ratio=(1.0, max(1.0, float(density_max))))
        params = {"n_plots": int(n_plots), "points": [points_min, points_max], "clusters": [clusters_min, clusters_max],
                  "separation": [separation_min, separation_max], "noise_max": noise_max,
                  "density_max": density_max, "seed": int(seed)}
        s.create_task_set(name, specs, kind="synthetic", params=params, target_annotators=int(target))
        return f"Created task set **{name.strip()}** with {len(specs)} plots.", _sets_table(s), _choices(name)

    def admin_create_from_corpus(password: str, name: str, corpus: str, n_plots: float, points: float,
                                 window: float, method: str, target: float, seed: float):
        """Create a task set of plots subsampled from a corpus's 2-D map (PCA or UMAP)."""
        from backends.clusters.perception import corpus_task_specs
        from backends.corpora.projection import ProjectionParams, project

        s = admin(password)
        c = backends.corpus(corpus)
        xy = project(c.vectors, ProjectionParams(method=method), cache=backends.cache, fingerprint=c.fingerprint)
        label_col = next((col for col in ("label", "class", "target", "category") if col in c.meta.columns), None)
        specs = corpus_task_specs(xy, c.meta["id"].tolist(), int(n_plots), points=int(points), seed=int(seed),
                                  window=float(window), corpus=corpus,
                                  labels=c.meta[label_col].tolist() if label_col else None)
        params = {"corpus": corpus, "n_plots": int(n_plots), "points": int(points), "window": float(window),
                  "method": method, "seed": int(seed), "truth_column": label_col}
        s.create_task_set(name, specs, kind="corpus", params=params, target_annotators=int(target))
        return f"Created task set **{name.strip()}** with {len(specs)} plots from {corpus}.", _sets_table(s), _choices(name)

    def admin_create_annotators(password: str, names: str):
        """One name per line → a table of names and new random tokens (shown once; only hashes are stored)."""
        import pandas as pd

        s = admin(password)
        wanted = [n.strip() for n in (names or "").splitlines() if n.strip()]
        if not wanted:
            raise InputError("names is empty: give one annotator name per line")
        if len(wanted) > 500:
            raise InputError(f"names has {len(wanted)} lines; at most 500 at a time")
        rows = []
        for n in wanted:
            tok = new_token()
            s.register_annotator(n, tok)
            rows.append({"name": n, "token": tok})
        return pd.DataFrame(rows, columns=list(TOKEN_COLUMNS))

    def admin_signup(password: str, task_set: str, open_signup: bool) -> str:
        """Open (True) or close (False) sign-up for a task set: whether unknown names may register
        themselves with their own token there. Closed by default: only annotators created here sign in."""
        s = admin(password)
        ts_id = s.task_set_id(task_set or "")
        s.set_signup_open(ts_id, bool(open_signup))
        name = next(t["name"] for t in s.task_sets() if t["id"] == ts_id)
        return (f"Sign-up for **{name}** is **open**: a new name registers with its token." if open_signup else
                f"Sign-up for **{name}** is **closed**: only annotators created here can sign in.")

    def admin_progress(password: str, task_set: str):
        """Per plot: answers, skips, target, complete, mean seconds per answer."""
        s = admin(password)
        return s.set_progress(s.task_set_id(task_set or ""))

    def admin_annotator_progress(password: str, task_set: str):
        """Per annotator: answers, skips, mean seconds per answer, last submission (UTC)."""
        s = admin(password)
        return s.annotator_progress(s.task_set_id(task_set or ""))

    def _answers_by_plot(s: AnnotationStore, ts_id: int):
        plots = {p.id: p for p in s.plots(ts_id)}
        by: dict[int, list] = {pid: [] for pid in plots}
        for a in s.annotations(ts_id):
            by[a["plot_id"]].append(a["groups"])
        return plots, by

    def admin_agreement(password: str, task_set: str):
        """Per plot: annotators, mean pairwise ARI, Krippendorff's α on co-membership, clusters seen."""
        import pandas as pd

        from backends.clusters.perception import plot_agreement

        s = admin(password)
        plots, by = _answers_by_plot(s, s.task_set_id(task_set or ""))
        rows = []
        for pid, p in plots.items():
            row = {"plot_id": pid, "position": p.position, "n_points": p.n_points,
                   **plot_agreement(by[pid], p.n_points)}
            rows.append(row)
        df = pd.DataFrame(rows) if rows else empty_table(AGREEMENT_COLUMNS)
        for col in ("mean_pairwise_ari", "alpha_comembership"):
            if col in df:
                df[col] = df[col].astype(float).round(3)
        return df

    def admin_agreement_map(password: str, plot_id: str):
        """The plot coloured by point-wise agreement (mean Jaccard of each point's group across annotator pairs)."""
        from backends.clusters.perception import partition_labels, pointwise_agreement

        s = admin(password)
        p = s.plot(plot_id)
        answers = [a["groups"] for a in s.annotations(p.task_set_id) if a["plot_id"] == p.id]
        if len(answers) < 2:
            raise InputError(f"plot {p.id} has {len(answers)} answer(s); agreement needs at least 2")
        agree = pointwise_agreement([partition_labels(g, p.n_points) for g in answers])
        hover = [f"point {i}: agreement {a:.2f}" for i, a in enumerate(agree)]
        payload = json.loads(scatter_payload(
            p.xy, ids=[str(i) for i in range(p.n_points)], hover=hover, dragmode="pan",
            title=f"Point-wise agreement, plot {p.id} ({len(answers)} annotators, mean {np.nanmean(agree):.2f})"))
        # a continuous colour scale even when few distinct values occur (the component would show categories)
        payload.update({"color_num": np.round(agree, 3).tolist(), "color_name": "agreement"})
        return json.dumps(payload, separators=(",", ":"))

    def admin_leaderboard(password: str, task_set: str):
        """Algorithms (k-means, DBSCAN, HDBSCAN, Gaussian mixture) vs the annotators: mean ARI."""
        from backends.clusters.perception import leaderboard

        s = admin(password)
        plots, by = _answers_by_plot(s, s.task_set_id(task_set or ""))
        return leaderboard([(plots[pid].xy, by[pid], plots[pid].truth) for pid in plots if by[pid]])

    def admin_export(password: str, task_set: str, fmt: str):
        """Export one row per point per answer as jsonl, csv or parquet. An empty task set means all."""
        s = admin(password)
        fmt = (fmt or "").lower()
        if fmt not in EXPORT_FORMATS:
            raise InputError(f"format must be one of {', '.join(EXPORT_FORMATS)}, but is {fmt!r}")
        ts_id = s.task_set_id(task_set) if (task_set or "").strip() else None
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", (task_set or "all").strip())[:64].strip("._") or "all"
        # a private folder Gradio serves in place; the file goes after one download (or a TTL)
        path = new_export_dir(export_file) / f"annotations-{stem}.{fmt}"
        s.export(path, fmt, ts_id)
        return serve_once(path)

    def admin_sets(password: str):
        """All task sets: name, kind, plots, target annotators."""
        return _sets_table(admin(password))

    def _choices(value: str | None = None):
        names = set_names()
        return gr.update(choices=names, value=(value.strip() if value else (names[0] if names else None)))

    def refresh_sets():
        """Names of the task sets, for the annotator's menu."""
        return _choices()

    # -- layout -------------------------------------------------------------------------
    try:  # a database that cannot be opened must not take the whole app down: say so in the tab
        initial, db_problem = set_names(), ""
    except Exception as exc:  # noqa: BLE001 - shown to the user
        initial = []
        db_problem = f"**The annotation database could not be opened** ({type(exc).__name__}: {exc})."
    with gr.Column(elem_id="ann-panel"):
        gr.Markdown("Mark the groups of points you **see** in each scatterplot. Pick a group, draw a lasso "
                    "(or a box) around its points, repeat for other groups, then submit. Points you leave "
                    "out count as not belonging to any cluster.")
        with gr.Row(equal_height=True):  # the button as tall as the fields beside it
            name = gr.Textbox(label="Name", max_lines=1, elem_id="ann-name", scale=2)
            token = gr.Textbox(label="Token", type="password", max_lines=1, elem_id="ann-token", scale=2)
            task_set = gr.Dropdown(choices=initial, value=initial[0] if initial else None, label="Task set",
                                   allow_custom_value=True, elem_id="ann-task-set", scale=2)
            sign_in_btn = gr.Button("Sign in", variant="primary", elem_id="ann-sign-in", scale=1)
        status = gr.Markdown(db_problem or "Sign in with your name and token.", label="status", elem_id="ann-status")
        with gr.Row():
            with gr.Column(scale=3, min_width=420):
                plot = scatter_map(height=480, elem_id="ann-plot", label="plot")
            with gr.Column(scale=1, min_width=240):
                group = gr.Radio([f"cluster {k}" for k in range(1, UI_CLUSTERS + 1)] + [NOISE], value="cluster 1",
                                 label="Group for the next selection", elem_id="ann-group")
                tool = gr.Radio(["lasso", "box"], value="lasso", label="Tool", elem_id="ann-tool")
                new_group_btn = gr.Button("New group (N)", elem_id="ann-new-group", size="sm")
                undo_btn = gr.Button("Undo (U)", elem_id="ann-undo", size="sm")
                summary = gr.Markdown(label="summary", elem_id="ann-summary")
                submit_btn = gr.Button("Submit (Enter)", variant="primary", elem_id="ann-submit")
                skip_btn = gr.Button("Skip (S)", elem_id="ann-skip", size="sm")
                gr.HTML(value="", html_template=KEYS_HTML, js_on_load=KEYS_JS + LEGEND_JS, elem_id="ann-keys")
        plot_id = gr.Textbox(visible=False, label="plot_id", elem_id="ann-plot-id")
        groups_json = gr.Textbox(value="{}", visible=False, label="groups", elem_id="ann-groups")
        actions = gr.State([])

        with gr.Accordion("Admin", open=False, elem_id="ann-admin"):
            password = gr.Textbox(label="Admin password", type="password", max_lines=1, elem_id="ann-admin-password")
            admin_ts = gr.Dropdown(choices=initial, value=initial[0] if initial else None, allow_custom_value=True,
                                   label="Task set", elem_id="ann-admin-task-set")
            admin_msg = gr.Markdown()
            with gr.Tabs():
                with gr.Tab("Create"):
                    with gr.Row():
                        with gr.Column():
                            gr.Markdown("**Synthetic**: Gaussian mixtures")
                            syn_name = gr.Textbox(label="Name", value="synthetic-1", max_lines=1)
                            syn_n = gr.Number(20, label="Plots", precision=0)
                            with gr.Row():
                                syn_pmin = gr.Number(100, label="Points min", precision=0)
                                syn_pmax = gr.Number(300, label="Points max", precision=0)
                            with gr.Row():
                                syn_cmin = gr.Number(1, label="Clusters min", precision=0)
                                syn_cmax = gr.Number(5, label="Clusters max", precision=0)
                            with gr.Row():
                                syn_smin = gr.Number(1.5, label="Separation min (σ)")
                                syn_smax = gr.Number(8.0, label="Separation max (σ)")
                            syn_noise = gr.Slider(0, 0.5, value=0.1, step=0.01, label="Background noise max (share)")
                            syn_density = gr.Slider(1, 20, value=4, step=0.5,
                                                    label="Density contrast max (densest / sparsest cluster)")
                            with gr.Row():
                                syn_target = gr.Number(3, label="Annotators per plot", precision=0)
                                syn_seed = gr.Number(0, label="Seed", precision=0)
                            syn_btn = gr.Button("Create synthetic task set", variant="primary")
                        with gr.Column():
                            gr.Markdown("**From a corpus**: its 2-D map, subsampled")
                            cor_name = gr.Textbox(label="Name", value="corpus-1", max_lines=1)
                            corpora = _safe_corpus_names(backends)
                            cor_corpus = gr.Dropdown(corpora, value=corpora[0] if corpora else None, label="Corpus",
                                                     allow_custom_value=True)
                            cor_method = gr.Radio(["pca", "umap"], value="pca", label="Map")
                            with gr.Row():
                                cor_n = gr.Number(20, label="Plots", precision=0)
                                cor_points = gr.Number(200, label="Points per plot", precision=0)
                            cor_window = gr.Slider(0.05, 1.0, value=1.0, step=0.05,
                                                   label="Window (1 = whole map; smaller zooms into a region)")
                            with gr.Row():
                                cor_target = gr.Number(3, label="Annotators per plot", precision=0)
                                cor_seed = gr.Number(0, label="Seed", precision=0)
                            cor_btn = gr.Button("Create corpus task set", variant="primary")
                    sets_table = gr.Dataframe(empty_table(SETS_COLUMNS), label="Task sets", interactive=False)
                    sets_btn = gr.Button("List task sets", size="sm")
                with gr.Tab("Annotators"):
                    ann_names = gr.Textbox(label="Names (one per line)", lines=4)
                    ann_btn = gr.Button("Create annotators with tokens")
                    ann_table = gr.Dataframe(empty_table(TOKEN_COLUMNS), interactive=False,
                                             label="Tokens (shown once; hand each to its annotator)")
                    with gr.Row():
                        signup = gr.Checkbox(value=False, label="Open sign-up for the task set above "
                                             "(a new name registers with its own token)")
                        signup_btn = gr.Button("Save sign-up setting", size="sm")
                    signup_md = gr.Markdown()
                with gr.Tab("Progress"):
                    prog_btn = gr.Button("Show progress")
                    prog_table = gr.Dataframe(empty_table(PROGRESS_COLUMNS), label="Per plot", interactive=False)
                    who_table = gr.Dataframe(empty_table(ANNOTATOR_COLUMNS), label="Per annotator", interactive=False)
                with gr.Tab("Agreement"):
                    agree_btn = gr.Button("Agreement per plot")
                    agree_table = gr.Dataframe(empty_table(AGREEMENT_COLUMNS), interactive=False,
                                               label="Agreement per plot (mean pairwise ARI; Krippendorff α on co-membership)")
                    with gr.Row():
                        map_plot_id = gr.Textbox(label="Plot id", max_lines=1)
                        map_btn = gr.Button("Point-wise agreement map")
                    agree_plot = scatter_map(height=380, elem_id="ann-agree-map")
                with gr.Tab("Leaderboard"):
                    gr.Markdown("Mean ARI of each algorithm with each annotator, over plots with answers. "
                                "k-means gets the annotators' median number of clusters; the Gaussian mixture "
                                "chooses k by BIC.")
                    board_btn = gr.Button("Compute leaderboard")
                    board_table = gr.Dataframe(empty_table(LEADERBOARD_COLUMNS), interactive=False,
                                               label="Leaderboard (mean ARI with the annotators)")
                with gr.Tab("Export"):
                    fmt = gr.Radio(list(EXPORT_FORMATS), value="csv", label="Format")
                    export_btn = gr.Button("Export (empty task set = all)")
                    export_file = gr.File(label="Export", interactive=False, elem_id="ann-export-file")

    # -- wiring -------------------------------------------------------------------------
    flow_out = [status, plot, plot_id, groups_json, actions]

    def fresh_plot(pid: str):
        """After sign-in, submit or skip: the counts and group of the previous plot (or annotator) go;
        the new plot starts with nothing selected, in group 'cluster 1'."""
        return (NEW_PLOT_SUMMARY if str(pid or "").strip() else ""), "cluster 1"

    for btn, fn, inputs, api in ((sign_in_btn, sign_in, [name, token, task_set, tool], "annotate_sign_in"),
                                 (submit_btn, submit, [token, plot_id, groups_json, tool], "annotate_submit"),
                                 (skip_btn, skip, [token, plot_id, tool], "annotate_skip")):
        btn.click(guard(fn), inputs, flow_out, api_name=api, concurrency_id="annotate-write",
                  concurrency_limit=SUBMIT_CONCURRENCY
                  ).success(fresh_plot, [plot_id], [summary, group], api_visibility="private", queue=False)
    plot.points_selected(guard(on_select), [token, actions, group, plot_id, tool],
                         [actions, plot, groups_json, summary],
                         api_visibility="private", trigger_mode="always_last")
    undo_btn.click(guard(undo), [token, actions, plot_id, tool], [actions, plot, groups_json, summary],
                   api_name="annotate_undo", trigger_mode="always_last")
    new_group_btn.click(new_group, [actions], group, api_name="annotate_new_group", queue=False)
    tool.input(guard(retool), [token, actions, plot_id, tool], plot, api_visibility="private", queue=False)
    gr.api(api_guard(progress), api_name="annotate_progress")
    def annotate_task_sets() -> list[str]:
        """Names of the task sets."""
        return set_names()

    gr.api(api_guard(annotate_task_sets), api_name="annotate_task_sets")

    admin_out = [admin_msg, sets_table, admin_ts]

    def annotator_menu(current: str | None):
        """The sign-in menu after the admin changed the task sets: the new ones are there without a
        reload; the annotator's choice stays (the first set when there was none)."""
        names = set_names()
        current = (current or "").strip()
        return gr.update(choices=names, value=current if current else (names[0] if names else None))

    menu = dict(fn=annotator_menu, inputs=[task_set], outputs=task_set, api_visibility="private", queue=False)
    syn_btn.click(guard(admin_create_synthetic),
                  [password, syn_name, syn_n, syn_pmin, syn_pmax, syn_cmin, syn_cmax, syn_smin, syn_smax, syn_noise,
                   syn_target, syn_seed, syn_density], admin_out, api_name="annotate_admin_create_synthetic",
                  concurrency_id="annotate-admin", concurrency_limit=1).success(**menu)
    cor_btn.click(guard(admin_create_from_corpus),
                  [password, cor_name, cor_corpus, cor_n, cor_points, cor_window, cor_method, cor_target, cor_seed],
                  admin_out, api_name="annotate_admin_create_from_corpus", concurrency_id="annotate-admin",
                  concurrency_limit=1).success(**menu)
    sets_btn.click(guard(admin_sets), [password], sets_table, api_name="annotate_admin_task_sets").success(**menu)
    ann_btn.click(guard(admin_create_annotators), [password, ann_names], ann_table,
                  api_name="annotate_admin_create_annotators", concurrency_id="annotate-admin")
    signup_btn.click(guard(admin_signup), [password, admin_ts, signup], signup_md, api_name="annotate_admin_signup")
    prog_btn.click(guard(admin_progress), [password, admin_ts], prog_table, api_name="annotate_admin_progress").then(
        guard(admin_annotator_progress), [password, admin_ts], who_table, api_name="annotate_admin_annotator_progress")
    agree_btn.click(guard(admin_agreement), [password, admin_ts], agree_table, api_name="annotate_admin_agreement",
                    concurrency_id="annotate-admin")
    map_btn.click(guard(admin_agreement_map), [password, map_plot_id], agree_plot,
                  api_name="annotate_admin_agreement_map", concurrency_id="annotate-admin")
    board_btn.click(guard(admin_leaderboard), [password, admin_ts], board_table,
                    api_name="annotate_admin_leaderboard", concurrency_id="annotate-admin")
    export_btn.click(guard(admin_export), [password, admin_ts, fmt], export_file, api_name="annotate_admin_export",
                     concurrency_id="annotate-admin")

    demo = gr.context.Context.root_block
    if demo is not None:  # fresh task-set menus for every visitor
        demo.load(refresh_sets, None, task_set, api_visibility="undocumented", queue=False)
    return store


def _safe_corpus_names(backends) -> list[str]:
    try:
        return list(backends.corpus_names())
    except Exception:  # a broken optional loader must not take the Annotate tab down
        return []
