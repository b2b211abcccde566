"""Annotate tab: the layout and event wiring of app/services/annotate.py (what the tab does):
annotators mark the clusters they see in scatterplots; an admin runs the study.

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

import gradio as gr

from app.components.errors import api_guard, guard
from app.components.scatter import scatter_map
from app.components.security import new_export_dir, serve_once
from app.components.tables import empty_table
from app.services.annotate import (  # noqa: F401  (GROUP_COLORS … store_for: re-exported, tests import them from here)
    AGREEMENT_COLUMNS,
    ANNOTATOR_COLUMNS,
    CATEGORIES,
    EXPORT_FORMATS,
    GROUP_COLORS,
    LEADERBOARD_COLUMNS,
    NEW_PLOT_SUMMARY,
    PROGRESS_COLUMNS,
    SETS_COLUMNS,
    TOKEN_COLUMNS,
    UI_CLUSTERS,
    AnnotateService,
    groups_from_labels,
    labels_from_actions,
    plot_payload,
    store_for,
)
from backends.clusters.annotations import NOISE

# Sign-in/submit/skip share one queue group. SQLite serialises the commits (one fsync each), so
# more workers do not add write throughput; 8 lets the reads, JSON and next-plot work overlap with
# a commit (20 clients × 10 submits here: same ~28/s as 1 worker, p90 latency 1.0 s vs 1.3–2.3 s)
# while leaving Gradio's thread pool to the other tabs.
SUBMIT_CONCURRENCY = 8

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


# ---------------------------------------------------------------------------------------
# The tab


def build_annotate(backends):
    svc = AnnotateService(backends)
    store = svc.store

    # -- annotator handlers: the service's, with the docstrings Gradio shows on the API page ----
    def sign_in(name: str, token: str, task_set: str, tool: str = "lasso"):
        """Sign in (a new name is registered with its token where sign-up is open for the task set)
        and get the next plot of the task set. Returns (status, plot JSON, plot id, groups JSON)."""
        return svc.sign_in(name, token, task_set, tool)

    def submit(token: str, plot_id: str, groups: str, tool: str = "lasso"):
        """Store the groups of one plot: groups is JSON {"cluster 1": [point ids], …, "noise": [...]}.
        Returns (status, next plot JSON, next plot id, groups JSON reset)."""
        return svc.submit(token, plot_id, groups, tool)

    def skip(token: str, plot_id: str, tool: str = "lasso"):
        """Skip a plot (recorded, so it is not shown again). Returns like annotate_submit."""
        return svc.skip(token, plot_id, tool)

    def progress(token: str, task_set: str) -> str:
        """Your own progress in a task set."""
        return svc.progress(token, task_set)

    def on_select(token: str, actions: list, group: str, plot_id: str, tool: str, evt: gr.EventData):
        data = getattr(evt, "_data", None) or {}
        out = svc.select(token, actions, group, plot_id, tool, data.get("indices", []))
        if out is None:  # no points, no plot, or plotly repeating the last selection
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return out

    def undo(token: str, actions: list, plot_id: str, tool: str = "lasso"):
        """Remove the last selection (of the plot handed to this token). Returns (actions, plot JSON,
        groups JSON, summary)."""
        actions, payload, groups, summary = svc.undo(token, actions, plot_id, tool)
        return actions, (gr.skip() if payload is None else payload), groups, summary

    def retool(token: str, actions: list, plot_id: str, tool: str):
        payload = svc.retool(token, actions, plot_id, tool)
        return gr.skip() if payload is None else payload

    def new_group(actions: list) -> str:
        """The first cluster name not used yet in this plot."""
        return svc.new_group(actions)

    # -- admin handlers -----------------------------------------------------------------
    def admin_create_synthetic(password: str, name: str, n_plots: float, points_min: float, points_max: float,
                               clusters_min: float, clusters_max: float, separation_min: float, separation_max: float,
                               noise_max: float, target: float, seed: float, density_max: float = 4.0):
        """Create a task set of Gaussian-mixture plots. Returns (message, task sets table)."""
        message, table, created = svc.admin_create_synthetic(
            password, name, n_plots, points_min, points_max, clusters_min, clusters_max, separation_min,
            separation_max, noise_max, target, seed, density_max)
        return message, table, _choices(created)

    def admin_create_from_corpus(password: str, name: str, corpus: str, n_plots: float, points: float,
                                 window: float, method: str, target: float, seed: float):
        """Create a task set of plots subsampled from a corpus's 2-D map (PCA or UMAP)."""
        message, table, created = svc.admin_create_from_corpus(password, name, corpus, n_plots, points, window,
                                                               method, target, seed)
        return message, table, _choices(created)

    def admin_create_annotators(password: str, names: str):
        """One name per line → a table of names and new random tokens (shown once; only hashes are stored)."""
        return svc.admin_create_annotators(password, names)

    def admin_signup(password: str, task_set: str, open_signup: bool) -> str:
        """Open (True) or close (False) sign-up for a task set: whether unknown names may register
        themselves with their own token there. Closed by default: only annotators created here sign in."""
        return svc.admin_signup(password, task_set, open_signup)

    def admin_progress(password: str, task_set: str):
        """Per plot: answers, skips, target, complete, mean seconds per answer."""
        return svc.admin_progress(password, task_set)

    def admin_annotator_progress(password: str, task_set: str):
        """Per annotator: answers, skips, mean seconds per answer, last submission (UTC)."""
        return svc.admin_annotator_progress(password, task_set)

    def admin_agreement(password: str, task_set: str):
        """Per plot: annotators, mean pairwise ARI, Krippendorff's α on co-membership, clusters seen."""
        return svc.admin_agreement(password, task_set)

    def admin_agreement_map(password: str, plot_id: str):
        """The plot coloured by point-wise agreement (mean Jaccard of each point's group across annotator pairs)."""
        return svc.admin_agreement_map(password, plot_id)

    def admin_leaderboard(password: str, task_set: str):
        """Algorithms (k-means, DBSCAN, HDBSCAN, Gaussian mixture) vs the annotators: mean ARI."""
        return svc.admin_leaderboard(password, task_set)

    def admin_export(password: str, task_set: str, fmt: str):
        """Export one row per point per answer as jsonl, csv or parquet. An empty task set means all."""
        # a private folder Gradio serves in place; the file goes after one download (or a TTL)
        return serve_once(svc.admin_export(password, task_set, fmt, lambda: new_export_dir(export_file)))

    def admin_sets(password: str):
        """All task sets: name, kind, plots, target annotators."""
        return svc.admin_sets(password)

    def _choices(value: str | None = None):
        names = svc.set_names()
        return gr.update(choices=names, value=(value.strip() if value else (names[0] if names else None)))

    def refresh_sets():
        """Names of the task sets, for the annotator's menu."""
        return _choices()

    # -- layout -------------------------------------------------------------------------
    try:  # a database that cannot be opened must not take the whole app down: say so in the tab
        initial, db_problem = svc.set_names(), ""
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
                            corpora = svc.corpus_choices()
                            cor_corpus = gr.Dropdown(corpora, value=corpora[0][1] if corpora else None, label="Corpus",
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
        return svc.set_names()

    gr.api(api_guard(annotate_task_sets), api_name="annotate_task_sets")

    admin_out = [admin_msg, sets_table, admin_ts]

    def annotator_menu(current: str | None):
        """The sign-in menu after the admin changed the task sets: the new ones are there without a
        reload; the annotator's choice stays (the first set when there was none)."""
        names = svc.set_names()
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

    def refresh_corpora(current: str | None):
        """The admin's corpus menu with the uploads made since the server started (kept across restarts)."""
        choices = svc.corpus_choices()
        keys = [k for _, k in choices]
        return gr.update(choices=choices, value=current if current in keys else (keys[0] if keys else None))

    demo = gr.context.Context.root_block
    if demo is not None:  # fresh task-set and corpus menus for every visitor
        demo.load(refresh_sets, None, task_set, api_visibility="undocumented", queue=False)
        demo.load(refresh_corpora, cor_corpus, cor_corpus, api_visibility="undocumented", queue=False)
    return store
