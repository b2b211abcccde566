"""The Annotate tab through its API (gradio_client): flow, validation, admin, 50 concurrent annotators.

The kill -9 of a running server is in test_annotations.py (durability)."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import free_port

ADMIN = "admin-pw"
N_PLOTS = 20


def make_demo(backends, open_signup=True):
    """The Annotate tab alone in a Blocks, queued like create_app does. open_signup: open sign-up on
    the task sets that exist now (closed by default), so the tests' new names can sign in."""
    import gradio as gr

    from app.components.scatter import static_paths
    from app.tabs.annotate import build_annotate, store_for

    if open_signup:
        store = store_for(backends)
        for t in store.task_sets():
            store.set_signup_open(t["id"], True)
    gr.set_static_paths(static_paths())
    with gr.Blocks() as demo:
        build_annotate(backends)
    demo.queue(default_concurrency_limit=4)
    return demo


def make_backends(root: Path, db: Path):
    from backends.clusters.annotations import AnnotationStore
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(root), annotations_db=str(db), admin_password=ADMIN)
    if not db.exists():  # cheap token hashing for tests (fixed per database when it is created)
        AnnotationStore(settings.annotations_url, token_iterations=1_000).engine.dispose()
    return Backends(settings)


def seed_task_set(backends, name="pilot", n_plots=N_PLOTS, target=50, open_signup=True):
    from app.tabs.annotate import store_for
    from backends.clusters.perception import synthetic_task_specs

    store = store_for(backends)
    ts = store.create_task_set(name, synthetic_task_specs(n_plots, seed=1, points=(30, 50)), kind="synthetic",
                               target_annotators=target)
    store.set_signup_open(ts, open_signup)
    return ts


@pytest.fixture(autouse=True)
def fresh_failure_counts():
    """Each test starts with no failed attempts counted (they all come from 127.0.0.1)."""
    from app.components.security import LIMITER

    LIMITER.reset()
    yield
    LIMITER.reset()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotate-app")
    backends = make_backends(root, root / "annotations.sqlite")
    seed_task_set(backends)
    demo = make_demo(backends)
    port = free_port()
    from app.components.security import app_kwargs

    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                app_kwargs=app_kwargs())
    yield f"http://127.0.0.1:{port}/", backends
    demo.close()


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False, ssl_verify=False)  # no CA bundle load per request: ~40 ms CPU less


def test_actions_replay_to_groups_with_fixed_colours():
    import numpy as np

    from app.tabs.annotate import GROUP_COLORS, groups_from_labels, labels_from_actions, plot_payload
    from backends.clusters.annotations import Plot

    labels = labels_from_actions([["cluster 2", [0, 1, 2]], ["noise", [2]], ["cluster 1", [4]]], 6)
    assert labels == ["cluster 2", "cluster 2", "noise", "unassigned", "cluster 1", "unassigned"]
    assert groups_from_labels(labels) == {"cluster 1": [4], "cluster 2": [0, 1], "noise": [2]}
    plot = Plot(1, 1, 0, np.zeros((6, 2), np.float32) + np.arange(6)[:, None], [str(i) for i in range(6)], None, {})
    d = json.loads(plot_payload(plot, labels))
    colour = {i: d["palette"][c] for i, c in enumerate(d["color_cat"])}
    assert colour[0] == GROUP_COLORS["cluster 2"] and colour[3] == GROUP_COLORS["unassigned"]
    assert json.loads(plot_payload(plot, None, tool="box"))["dragmode"] == "select"


def test_annotate_is_a_tab_of_the_app():
    from app.tabs import TABS

    assert ("Annotate", "annotate", "app.tabs.annotate:build_annotate") in TABS


def test_named_endpoints(app):
    url, _ = app
    names = set(client(url).view_api(print_info=False, return_format="dict")["named_endpoints"])
    for ep in ("sign_in", "submit", "skip", "undo", "new_group", "progress", "task_sets", "admin_create_synthetic",
               "admin_create_from_corpus", "admin_create_annotators", "admin_progress", "admin_agreement",
               "admin_agreement_map", "admin_leaderboard", "admin_export", "admin_signup"):
        assert f"/annotate_{ep}" in names


def test_sign_in_submit_skip_progress(app):
    url, _ = app
    c = client(url)
    status, payload, plot_id, groups = c.predict("flow", "token-flow", "pilot", "lasso", api_name="/annotate_sign_in")
    assert "Signed in as **flow**" in status and json.loads(payload)["x"] and plot_id
    status, _, next_id, groups = c.predict("token-flow", plot_id, json.dumps({"cluster 1": [0, 1, 2], "noise": [3]}),
                                           "lasso", api_name="/annotate_submit")
    assert "Stored answer" in status and next_id != plot_id and groups == "{}"
    # a retry of the same submission is acknowledged, not duplicated
    status, *_ = c.predict("token-flow", plot_id, json.dumps({"noise": [3], "cluster 1": [2, 1, 0]}), "lasso",
                           api_name="/annotate_submit")
    assert "already stored" in status
    status, *_ = c.predict("token-flow", next_id, "lasso", api_name="/annotate_skip")
    assert "Skipped" in status
    assert "submitted 1 · skipped 1" in c.predict("token-flow", "pilot", api_name="/annotate_progress")


@pytest.mark.parametrize("token, plot, groups, message", [
    ("token-bad", "9999", '{"cluster 1": [1]}', "unknown plot"),
    ("token-bad", "1", '{"cluster 1": [1000]}', "out of range"),
    ("token-bad", "1", "{}", "groups is empty"),
    ("token-bad", "1", '{"cluster 1": []}', "is empty"),
    ("token-bad", "1", '{"cluster 1": [' + ",".join(["1"] * 50_000) + "]}", "too large"),
    ("token-wrong", "1", '{"cluster 1": [1]}', "unknown token"),
    ("token-bad", "1", '{"cluster 1": [1], "noise": [1]}', "two groups"),
    ("token-bad", "1", "not json", "not valid JSON"),
])
def test_malformed_submissions_are_rejected_with_a_message(app, token, plot, groups, message):
    from gradio_client.exceptions import AppError

    url, _ = app
    c = client(url)
    c.predict("bad", "token-bad", "pilot", "lasso", api_name="/annotate_sign_in")
    with pytest.raises(AppError, match=message):
        c.predict(token, plot, groups, "lasso", api_name="/annotate_submit")


def test_wrong_token_cannot_sign_in(app):
    from gradio_client.exceptions import AppError

    url, _ = app
    c = client(url)
    c.predict("eve", "token-eve", "pilot", "lasso", api_name="/annotate_sign_in")
    with pytest.raises(AppError, match="wrong token"):
        c.predict("eve", "token-not-eve", "pilot", "lasso", api_name="/annotate_sign_in")


def test_admin_needs_the_password(app):
    from gradio_client.exceptions import AppError

    url, _ = app
    c = client(url)
    for ep, args in (("/annotate_admin_export", ("pilot", "csv")), ("/annotate_admin_progress", ("pilot",)),
                     ("/annotate_admin_agreement", ("pilot",)), ("/annotate_admin_create_annotators", ("x",))):
        with pytest.raises(AppError, match="wrong admin password"):
            c.predict("token-flow", *args, api_name=ep)  # an annotator's token is not the password


def test_admin_views_and_export(app):
    url, _ = app
    c = client(url)
    a, b = (client(url) for _ in range(2))
    _, _, pa, _ = a.predict("ann-a", "token-ann-a", "pilot", "lasso", api_name="/annotate_sign_in")
    _, _, pb, _ = b.predict("ann-b", "token-ann-b", "pilot", "lasso", api_name="/annotate_sign_in")
    assert pa == pb  # both get the first plot still short of its target
    a.predict("token-ann-a", pa, json.dumps({"cluster 1": list(range(10)), "cluster 2": list(range(10, 20))}), "lasso",
              api_name="/annotate_submit")
    b.predict("token-ann-b", pb, json.dumps({"cluster 1": list(range(10)), "cluster 2": list(range(10, 20))}), "lasso",
              api_name="/annotate_submit")
    prog = c.predict(ADMIN, "pilot", api_name="/annotate_admin_progress")
    assert len(prog["data"]) == N_PLOTS
    who = c.predict(ADMIN, "pilot", api_name="/annotate_admin_annotator_progress")
    who = pd.DataFrame(who["data"], columns=who["headers"]).set_index("annotator")
    assert who.loc["ann-a", "answers"] == 1 and who.loc["ann-a", "skips"] == 0
    agree = c.predict(ADMIN, "pilot", api_name="/annotate_admin_agreement")
    df = pd.DataFrame(agree["data"], columns=agree["headers"])
    row = df[df.plot_id == int(pa)].iloc[0]
    assert row["annotators"] >= 2
    mp = json.loads(c.predict(ADMIN, pa, api_name="/annotate_admin_agreement_map"))
    assert len(mp["x"]) == len(mp["color_num"] if "color_num" in mp else mp["color_cat"])
    board = c.predict(ADMIN, "pilot", api_name="/annotate_admin_leaderboard")
    assert {r[0] for r in board["data"]} >= {"k-means", "DBSCAN", "HDBSCAN", "Gaussian mixture"}
    for fmt in ("csv", "jsonl", "parquet"):
        path = c.predict(ADMIN, "pilot", fmt, api_name="/annotate_admin_export")
        ex = {"csv": pd.read_csv, "parquet": pd.read_parquet,
              "jsonl": lambda p: pd.read_json(p, lines=True)}[fmt](path)
        mine = ex[(ex.annotator == "ann-a") & (ex.plot_id == int(pa))]
        assert len(mine) == mine.point_id.nunique() > 20  # one row per point
        assert set(mine[mine.point_id < 10].group) == {"cluster 1"}
        assert set(mine[mine.point_id >= 20].group) == {"unassigned"}


def test_admin_creates_task_sets_and_annotators(app):
    url, backends = app
    c = client(url)
    msg, table, _ = c.predict(ADMIN, "syn-small", 3, 40, 60, 2, 3, 3.0, 6.0, 0.05, 2, 7,
                              api_name="/annotate_admin_create_synthetic")
    assert "3 plots" in msg and "syn-small" in [r[0] for r in table["data"]]
    tokens = c.predict(ADMIN, "zoe\nyan", api_name="/annotate_admin_create_annotators")
    rows = dict(tokens["data"])
    assert set(rows) == {"zoe", "yan"} and len(rows["zoe"]) >= 16
    status, *_ = c.predict("zoe", rows["zoe"], "syn-small", "lasso", api_name="/annotate_sign_in")
    assert "Signed in as **zoe**" in status
    from gradio_client.exceptions import AppError

    assert "closed" in dict(zip(table["headers"], [r for r in table["data"] if r[0] == "syn-small"][0]))["sign_up"]
    with pytest.raises(AppError, match="unknown name or wrong token"):  # sign-up is closed by default
        c.predict("stranger", "token-stranger", "syn-small", "lasso", api_name="/annotate_sign_in")
    status, *_ = c.predict("yan", rows["yan"], "syn-small", "lasso", api_name="/annotate_sign_in")
    assert "Signed in as **yan**" in status
    assert "open" in c.predict(ADMIN, "syn-small", True, api_name="/annotate_admin_signup")
    status, *_ = c.predict("stranger", "token-stranger", "syn-small", "lasso", api_name="/annotate_sign_in")
    assert "Signed in as **stranger**" in status
    assert "closed" in c.predict(ADMIN, "syn-small", False, api_name="/annotate_admin_signup")


def test_admin_creates_a_task_set_from_a_corpus(app):
    import numpy as np

    from backends.corpora.corpus import Corpus

    url, backends = app
    rng = np.random.default_rng(0)
    vec = np.concatenate([rng.normal(size=(100, 8)) + 6 * k for k in range(3)]).astype("float32")
    key = backends.add_corpus(Corpus("blobs", vec, pd.DataFrame({"label": np.repeat([0, 1, 2], 100)})))
    msg, *_ = client(url).predict(ADMIN, "from-corpus", key, 2, 60, 1.0, "pca", 2, 0,
                                  api_name="/annotate_admin_create_from_corpus")
    assert "2 plots" in msg


LOAD_CLIENTS = r"""
import json, sys, threading, time
from gradio_client import Client

url = sys.argv[1]
errors, acks, started = [], [], []
barrier = threading.Barrier(50, action=lambda: started.append(time.perf_counter()))


def annotator(i):
    try:
        c = Client(url, verbose=False, ssl_verify=False)
        tok = f"token-load-{i:02d}"
        _, _, pid, _ = c.predict(f"load{i:02d}", tok, "load", "lasso", api_name="/annotate_sign_in")
        barrier.wait(timeout=120)  # everyone signed in (registered): now submit at once
        for n in range(20):
            groups = json.dumps({"cluster 1": [0, 1, 2, 3 + i % 25], "noise": [29]})
            status, _, next_pid, _ = c.predict(tok, pid, groups, "lasso", api_name="/annotate_submit")
            assert "Stored answer" in status, status
            acks.append([i, pid])
            if n == 0:  # a retried submission (e.g. after a lost response) is not stored twice
                status, *_ = c.predict(tok, pid, groups, "lasso", api_name="/annotate_submit")
                assert "already stored" in status, status
            pid = next_pid
        assert pid == "", pid  # all 20 plots done
    except Exception as exc:
        errors.append(f"annotator {i}: {exc!r}")


threads = [threading.Thread(target=annotator, args=(i,)) for i in range(50)]
[t.start() for t in threads]
[t.join(timeout=400) for t in threads]
print(json.dumps({"errors": errors, "acks": acks, "elapsed": time.perf_counter() - started[0] if started else None}))
"""


@pytest.mark.slow  # 25–70 s on a busy 2-core machine
def test_50_concurrent_annotators_20_submissions_each(app):
    """Exactly 1,000 answers stored: none lost, none duplicated (each client also retries one).

    The 50 client threads run in a second process (only gradio_client imported), so the
    clients and the in-process server do not share one GIL.
    """
    url, backends = app
    ts = seed_task_set(backends, name="load", target=50)
    from app.tabs.annotate import store_for

    store = store_for(backends)
    before = store.count_annotations()
    proc = subprocess.run([sys.executable, "-c", LOAD_CLIENTS, url], capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["errors"], out["errors"][:3]
    assert len(out["acks"]) == 1000
    assert store.count_annotations() == before + 1000
    rows = store.annotations(ts, include_skipped=True)
    assert len(rows) == 1000
    assert len({(r["annotator_id"], r["plot_id"]) for r in rows}) == 1000
    assert set(store.set_progress(ts)["answers"]) == {50}
    elapsed = out["elapsed"]
    print(f"\n50 annotators x 20 submissions (+50 retries): {elapsed:.1f} s, {1050 / elapsed:.0f} submissions/s")


def test_an_unopenable_database_is_reported_not_fatal(tmp_path):
    import gradio as gr

    from app.tabs.annotate import build_annotate
    from backends.registry import Backends
    from backends.settings import Settings

    (tmp_path / "file").write_text("x")  # a file where a directory should be
    settings = Settings.from_env(cache_dir=str(tmp_path), annotations_db=str(tmp_path / "file" / "a.sqlite"))
    with gr.Blocks() as demo:
        build_annotate(Backends(settings))
    md = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "ann-status"][0]
    assert "could not be opened" in md.value
