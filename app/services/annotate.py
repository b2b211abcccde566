"""What the Annotate tab does: annotators mark the clusters they see in scatterplots; an admin runs the study.

``AnnotateService`` takes plain values (names, tokens, plot ids, JSON text, the list of selections)
and returns plain values (Markdown, the scatter component's JSON, JSON text, pandas DataFrames,
file paths); app/tabs/annotate.py lays it out and wires it to Gradio (and registers the
annotate_* API endpoints). Everything is kept in the annotation store of the app's settings
(backends/clusters/annotations.py: SQLite by default).

Annotator flow: sign in (name + token; an unknown name is registered with its token only where the
admin opened sign-up for the task set) → the next plot the server hands to that token → selections
(group, point ids), replayed into groups (later selections move points) → undo → submit or skip →
the next plot. sign_in, submit and skip return (status, plot JSON, plot id, groups JSON, selections):
plot id is "" when the task set is done. Admin: task sets (synthetic Gaussian mixtures, or
subsampled from a corpus's 2-D map), annotators and their tokens, sign-up, progress, agreement, the
algorithm leaderboard, export; each admin method takes the admin password first.

Wrong passwords and tokens are checked under the failure limiter of app/components/security.py
(which raises AuthRefused, an InputError that the tab's `guard` shows as a message). Where a handler has nothing to change
(a selection event without points, an undo without a plot) the service returns None for that value.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.components.scatter import PALETTE, scatter_payload
from app.components.security import auth_attempt
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
NEW_PLOT_SUMMARY = "Nothing selected yet: pick a group, then draw a lasso or box around its points."


# ---------------------------------------------------------------------------------------
# Pure functions


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


def _shown(plot_id) -> bool:
    """Whether a plot is shown (its id is not empty)."""
    return bool(str(plot_id or "").strip())


# ---------------------------------------------------------------------------------------
# The service


class AnnotateService:
    """What the Annotate tab (and its API) does, independent of the layout."""

    def __init__(self, backends):
        self.b = backends

    def store(self) -> AnnotationStore:
        return store_for(self.b)

    def set_names(self) -> list[str]:
        """Names of the task sets."""
        return [t["name"] for t in self.store().task_sets()]

    def corpus_names(self) -> list[str]:
        """The corpora a task set can be made from: this server's uploads, then the bundled ones
        ([] when listing them fails)."""
        return [key for _, key in self.corpus_choices()]

    def corpus_choices(self) -> list[tuple[str, str]]:
        """(label, key) of the corpora a task set can be made from, uploads first ("wine.csv · 178 × 13")."""
        try:
            return list(self.b.corpus_choices())
        except Exception:  # a broken optional loader must not take the Annotate tab down
            return []

    # -- annotator ----------------------------------------------------------------------
    def _progress_md(self, who, ts_id: int, ts_name: str, note: str = "") -> str:
        p = self.store().progress(who.id, ts_id)
        line = (f"**{who.name}** · task set **{ts_name}** · submitted {p['submitted']} · skipped {p['skipped']} · "
                f"remaining {p['remaining']} of {p['total']}")
        return (note + "\n\n" if note else "") + line

    def _show_next(self, who, ts_id: int, tool: str, note: str = ""):
        s = self.store()
        plot = s.next_plot(who.id, ts_id)
        ts_name = next((t["name"] for t in s.task_sets() if t["id"] == ts_id), str(ts_id))
        md = self._progress_md(who, ts_id, ts_name, note)
        if plot is None:  # an empty plot, so the last one does not stay on screen
            done = scatter_payload(np.zeros((0, 2), np.float32), ids=[], title="All plots done", uirevision="done")
            return md + "\n\n**All plots in this task set are done. Thank you!**", done, "", "{}", []
        title = f"Plot {plot.position + 1} (id {plot.id}) · {plot.n_points} points"
        return md, plot_payload(plot, tool=tool, title=title), str(plot.id), "{}", []

    def who(self, token: str):
        """The annotator holding this token (failed tokens are limited and logged)."""
        return auth_attempt("token", self.store().authenticate, token, failures=(AuthError,))

    def sign_in(self, name: str, token: str, task_set: str, tool: str = "lasso"):
        """Sign in (a new name is registered with its token where sign-up is open for the task set)
        and get the next plot of the task set. Returns (status, plot JSON, plot id, groups JSON, selections)."""
        s = self.store()
        ts_id = s.task_set_id(task_set or "")
        who = auth_attempt("sign-in", s.sign_in, name, token, ts_id, failures=(AuthError,))
        return self._show_next(who, ts_id, tool, note=f"Signed in as **{who.name}**.")

    def submit(self, token: str, plot_id: str, groups: str, tool: str = "lasso"):
        """Store the groups of one plot: groups is JSON {"cluster 1": [point ids], …, "noise": [...]}.
        A repeated submission is acknowledged, not stored twice. Returns like sign_in, for the next plot."""
        s = self.store()
        who = self.who(token)
        if not _shown(plot_id):
            raise InputError("no plot is shown: sign in first")
        res = s.submit(who.id, plot_id, groups)
        plot = s.plot(plot_id)
        note = (f"Stored answer #{res.annotation_id} for plot {plot.id}." if res.created
                else f"Plot {plot.id} was already stored (answer #{res.annotation_id}); not duplicated.")
        return self._show_next(who, plot.task_set_id, tool, note)

    def skip(self, token: str, plot_id: str, tool: str = "lasso"):
        """Skip a plot (recorded, so it is not shown again). Returns like submit."""
        s = self.store()
        who = self.who(token)
        if not _shown(plot_id):
            raise InputError("no plot is shown: sign in first")
        res = s.submit(who.id, plot_id, skipped=True)
        plot = s.plot(plot_id)
        return self._show_next(who, plot.task_set_id, tool, f"Skipped plot {plot.id} (#{res.annotation_id}).")

    def progress(self, token: str, task_set: str) -> str:
        """Your own progress in a task set."""
        s = self.store()
        who = self.who(token)
        ts_id = s.task_set_id(task_set or "")
        return self._progress_md(who, ts_id, task_set)

    def redraw(self, token: str, plot_id: str, actions: list, tool: str) -> tuple[str, str, str]:
        """The plot handed to this token with its selections replayed: (plot JSON, groups JSON, summary)."""
        plot = self.store().handed(self.who(token).id, plot_id)  # only the plot handed to this token
        labels = labels_from_actions(actions, plot.n_points)
        title = f"Plot {plot.position + 1} (id {plot.id}) · {plot.n_points} points"
        payload = plot_payload(plot, labels, tool=tool, title=title, revision=str(len(actions)))
        return payload, json.dumps(groups_from_labels(labels)), _summary(labels)

    def select(self, token: str, actions: list, group: str, plot_id: str, tool: str, indices: list):
        """A new selection of points (indices) for a group: (selections, plot JSON, groups JSON,
        summary), or None when nothing changes (no points, no plot, or a repeat of the last one)."""
        idx = [int(i) for i in indices]
        if not idx or not _shown(plot_id):
            return None
        actions = list(actions or [])
        if actions and actions[-1] == [group, idx]:
            # plotly repeats plotly_selected for one lasso (on re-render); a repeat changes nothing
            # and must not become a second undo step
            return None
        actions.append([group, idx])
        payload, groups, summary = self.redraw(token, plot_id, actions, tool)
        return actions, payload, groups, summary

    def undo(self, token: str, actions: list, plot_id: str, tool: str = "lasso"):
        """Remove the last selection (of the plot handed to this token). Returns (selections, plot
        JSON, groups JSON, summary); the plot JSON is None when no plot is shown."""
        actions = list(actions or [])[:-1]
        if not _shown(plot_id):
            return actions, None, "{}", "Nothing to undo."
        payload, groups, summary = self.redraw(token, plot_id, actions, tool)
        return actions, payload, groups, summary

    def retool(self, token: str, actions: list, plot_id: str, tool: str) -> str | None:
        """The plot redrawn for another tool (lasso or box); None when no plot is shown."""
        if not _shown(plot_id):
            return None
        return self.redraw(token, plot_id, actions, tool)[0]

    @staticmethod
    def new_group(actions: list) -> str:
        """The first cluster name not used yet in this plot."""
        used = {g for g, _ in actions or []}
        for k in range(1, UI_CLUSTERS + 1):
            if f"cluster {k}" not in used:
                return f"cluster {k}"
        return f"cluster {UI_CLUSTERS}"

    # -- admin --------------------------------------------------------------------------
    def admin(self, password: str) -> AnnotationStore:
        """The store, once the admin password is right (failed passwords are limited and logged)."""
        auth_attempt("admin password", check_password, password, self.b.settings.admin_password,
                     failures=(AuthError,))
        return self.store()

    @staticmethod
    def sets_table(s: AnnotationStore):
        import pandas as pd

        rows = [{"task_set": t["name"], "kind": t["kind"], "plots": t["n_plots"], "target": t["target_annotators"],
                 "sign_up": "open" if t["signup_open"] else "closed",
                 "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(t["created_at"]))} for t in s.task_sets()]
        return pd.DataFrame(rows, columns=list(SETS_COLUMNS))

    def admin_sets(self, password: str):
        """All task sets: name, kind, plots, target annotators."""
        return self.sets_table(self.admin(password))

    def admin_create_synthetic(self, password: str, name: str, n_plots: float, points_min: float, points_max: float,
                               clusters_min: float, clusters_max: float, separation_min: float, separation_max: float,
                               noise_max: float, target: float, seed: float, density_max: float = 4.0):
        """Create a task set of Gaussian-mixture plots. Returns (message, task sets table, its name)."""
        from backends.clusters.perception import synthetic_task_specs

        s = self.admin(password)
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
        return f"Created task set **{name.strip()}** with {len(specs)} plots.", self.sets_table(s), name.strip()

    def admin_create_from_corpus(self, password: str, name: str, corpus: str, n_plots: float, points: float,
                                 window: float, method: str, target: float, seed: float):
        """Create a task set of plots subsampled from a corpus's 2-D map (PCA or UMAP). Returns
        (message, task sets table, its name)."""
        from backends.clusters.perception import corpus_task_specs
        from backends.corpora.projection import ProjectionParams, project

        s = self.admin(password)
        c = self.b.corpus(corpus)
        xy = project(c.vectors, ProjectionParams(method=method), cache=self.b.cache, fingerprint=c.fingerprint)
        label_col = next((col for col in ("label", "class", "target", "category") if col in c.meta.columns), None)
        specs = corpus_task_specs(xy, c.meta["id"].tolist(), int(n_plots), points=int(points), seed=int(seed),
                                  window=float(window), corpus=corpus,
                                  labels=c.meta[label_col].tolist() if label_col else None)
        params = {"corpus": corpus, "n_plots": int(n_plots), "points": int(points), "window": float(window),
                  "method": method, "seed": int(seed), "truth_column": label_col}
        s.create_task_set(name, specs, kind="corpus", params=params, target_annotators=int(target))
        return (f"Created task set **{name.strip()}** with {len(specs)} plots from {corpus}.", self.sets_table(s),
                name.strip())

    def admin_create_annotators(self, password: str, names: str):
        """One name per line → a table of names and new random tokens (shown once; only hashes are stored)."""
        import pandas as pd

        s = self.admin(password)
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

    def admin_signup(self, password: str, task_set: str, open_signup: bool) -> str:
        """Open (True) or close (False) sign-up for a task set: whether unknown names may register
        themselves with their own token there. Closed by default: only annotators created here sign in."""
        s = self.admin(password)
        ts_id = s.task_set_id(task_set or "")
        s.set_signup_open(ts_id, bool(open_signup))
        name = next(t["name"] for t in s.task_sets() if t["id"] == ts_id)
        return (f"Sign-up for **{name}** is **open**: a new name registers with its token." if open_signup else
                f"Sign-up for **{name}** is **closed**: only annotators created here can sign in.")

    def admin_progress(self, password: str, task_set: str):
        """Per plot: answers, skips, target, complete, mean seconds per answer."""
        s = self.admin(password)
        return s.set_progress(s.task_set_id(task_set or ""))

    def admin_annotator_progress(self, password: str, task_set: str):
        """Per annotator: answers, skips, mean seconds per answer, last submission (UTC)."""
        s = self.admin(password)
        return s.annotator_progress(s.task_set_id(task_set or ""))

    @staticmethod
    def answers_by_plot(s: AnnotationStore, ts_id: int):
        """({plot id: plot}, {plot id: [groups of each answer]}) of a task set."""
        plots = {p.id: p for p in s.plots(ts_id)}
        by: dict[int, list] = {pid: [] for pid in plots}
        for a in s.annotations(ts_id):
            by[a["plot_id"]].append(a["groups"])
        return plots, by

    def admin_agreement(self, password: str, task_set: str):
        """Per plot: annotators, mean pairwise ARI, Krippendorff's α on co-membership, clusters seen."""
        import pandas as pd

        from backends.clusters.perception import plot_agreement

        s = self.admin(password)
        plots, by = self.answers_by_plot(s, s.task_set_id(task_set or ""))
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

    def admin_agreement_map(self, password: str, plot_id: str) -> str:
        """The plot coloured by point-wise agreement (mean Jaccard of each point's group across annotator pairs)."""
        from backends.clusters.perception import partition_labels, pointwise_agreement

        s = self.admin(password)
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

    def admin_leaderboard(self, password: str, task_set: str):
        """Algorithms (k-means, DBSCAN, HDBSCAN, Gaussian mixture) vs the annotators: mean ARI."""
        from backends.clusters.perception import leaderboard

        s = self.admin(password)
        plots, by = self.answers_by_plot(s, s.task_set_id(task_set or ""))
        return leaderboard([(plots[pid].xy, by[pid], plots[pid].truth) for pid in plots if by[pid]])

    def admin_export(self, password: str, task_set: str, fmt: str, folder: Path | str | Callable[[], Path]) -> str:
        """Export one row per point per answer as jsonl, csv or parquet (an empty task set means all)
        to a file in `folder` (or in the folder that `folder()` makes, called once the password and
        the format are checked). Returns the file's path."""
        s = self.admin(password)
        fmt = (fmt or "").lower()
        if fmt not in EXPORT_FORMATS:
            raise InputError(f"format must be one of {', '.join(EXPORT_FORMATS)}, but is {fmt!r}")
        ts_id = s.task_set_id(task_set) if (task_set or "").strip() else None
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", (task_set or "all").strip())[:64].strip("._") or "all"
        path = Path(folder() if callable(folder) else folder) / f"annotations-{stem}.{fmt}"
        s.export(path, fmt, ts_id)
        return str(path)
