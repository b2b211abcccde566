"""The annotation store: WAL, uniqueness, validation, durability across processes."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from backends.clusters.annotations import AnnotationStore, AuthError, PlotSpec, check_password, parse_groups
from backends.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    s = AnnotationStore(f"sqlite:///{tmp_path / 'a.sqlite'}")
    yield s
    s.close()


def _task_set(store, n_plots=3, n_points=40, name="pilot", target=2):
    rng = np.random.default_rng(0)
    specs = [PlotSpec(rng.normal(size=(n_points, 2)), truth=[i % 2 for i in range(n_points)]) for _ in range(n_plots)]
    return store.create_task_set(name, specs, kind="synthetic", target_annotators=target)


def test_sqlite_runs_in_wal_with_full_sync(store, tmp_path):
    assert store.journal_mode() == "wal"
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
    _task_set(store)
    assert (tmp_path / "a.sqlite-wal").exists()


def test_flow_submit_progress_export(store, tmp_path):
    ts = _task_set(store)
    ada = store.register_annotator("ada", "token-ada")
    p = store.next_plot(ada.id, ts)
    r = store.submit(ada.id, p.id, json.dumps({"cluster 1": [0, 1, 2], "noise": [5]}))
    assert r.created
    assert store.progress(ada.id, ts) == {"total": 3, "submitted": 1, "skipped": 0, "remaining": 2}
    nxt = store.next_plot(ada.id, ts)
    assert nxt.id != p.id
    store.submit(ada.id, nxt.id, skipped=True)
    assert store.progress(ada.id, ts)["skipped"] == 1
    df = store.export_frame(ts)
    assert len(df) == 40  # one row per point of the one non-skipped answer
    assert df.loc[df.point_id == 1, "group"].item() == "cluster 1"
    assert df.loc[df.point_id == 5, "group"].item() == "noise"
    assert df.loc[df.point_id == 9, "group"].item() == "unassigned"
    for fmt in ("jsonl", "csv", "parquet"):
        assert store.export(tmp_path / f"out.{fmt}", fmt, ts) == 40


def test_retry_is_not_duplicated_and_answers_are_final(store):
    ts = _task_set(store)
    ada = store.register_annotator("ada", "token-ada")
    p = store.next_plot(ada.id, ts)
    first = store.submit(ada.id, p.id, {"cluster 1": [2, 1, 0]})
    again = store.submit(ada.id, p.id, {"cluster 1": [0, 1, 2]})
    assert again.annotation_id == first.annotation_id and not again.created
    with pytest.raises(InputError, match="already answered"):
        store.submit(ada.id, p.id, {"cluster 1": [3]})
    assert store.count_annotations() == 1


def test_unique_constraint_holds_in_the_database(store):
    ts = _task_set(store)
    ada = store.register_annotator("ada", "token-ada")
    p = store.next_plot(ada.id, ts)
    store.submit(ada.id, p.id, {"cluster 1": [1]})
    con = sqlite3.connect(store.url.split(":///", 1)[1])
    with pytest.raises(sqlite3.IntegrityError):
        con.execute("INSERT INTO annotations (annotator_id, plot_id, skipped, groups, submitted_at) VALUES (?, ?, 0, '{}', 0)",
                    (ada.id, p.id))
    con.close()


def test_concurrent_identical_retries_store_one_row(store):
    ts = _task_set(store)
    ada = store.register_annotator("ada", "token-ada")
    p = store.next_plot(ada.id, ts)
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.submit(ada.id, p.id, {"cluster 1": [4, 5]})))
               for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len({r.annotation_id for r in results}) == 1 and sum(r.created for r in results) == 1
    assert store.count_annotations() == 1


def test_sign_in_and_tokens(store):
    store.register_annotator("ada", "token-ada")
    assert store.sign_in("ada", "token-ada").name == "ada"
    with pytest.raises(AuthError, match="wrong token"):
        store.sign_in("ada", "not-the-token")
    with pytest.raises(AuthError, match="unknown token"):
        store.authenticate("nobody-has-this")
    with pytest.raises(AuthError):
        store.sign_in("bob", "token-ada")  # a token identifies one annotator
    with pytest.raises(AuthError, match="6–256"):
        store.sign_in("bob", "abc")
    with pytest.raises(AuthError, match="wrong admin password"):
        check_password("guess", "secret")
    with pytest.raises(AuthError, match="disabled"):
        check_password("", "")


@pytest.mark.parametrize("groups, message", [
    ("", "empty"), ("{}", "empty"), ('{"cluster 1": []}', "is empty"), ('{"cluster 1": [40]}', "out of range"),
    ('{"cluster 1": [-1]}', "out of range"), ('{"cluster 1": [1], "noise": [1]}', "two groups"),
    ('{"blob": [1]}', "not allowed"), ('{"cluster 1": ["x"]}', "not an integer"), ("[1, 2]", "JSON object"),
    ("{nope", "not valid JSON"), ('{"cluster 1": [' + ",".join(["1"] * 40000) + "]}", "too large"),
])
def test_malformed_groups_are_rejected(groups, message):
    with pytest.raises(InputError, match=message):
        parse_groups(groups, 40)


def test_unknown_plot_and_duplicate_task_set(store):
    ts = _task_set(store)
    ada = store.register_annotator("ada", "token-ada")
    with pytest.raises(InputError, match="unknown plot"):
        store.submit(ada.id, 999, {"cluster 1": [1]})
    with pytest.raises(InputError, match="already exists"):
        _task_set(store)
    assert store.task_set_id("pilot") == ts
    with pytest.raises(InputError, match="unknown task set"):
        store.task_set_id("nope")


def test_next_plot_prefers_plots_short_of_target(store):
    ts = _task_set(store, n_plots=2, target=1)
    a, b = store.register_annotator("ada", "token-ada"), store.register_annotator("bob", "token-bob")
    pa = store.next_plot(a.id, ts)
    store.submit(a.id, pa.id, {"cluster 1": [1]})
    pb = store.next_plot(b.id, ts)
    assert pb.id != pa.id  # plot 1 has its one answer already


WRITER = r"""
import sys, numpy as np
from backends.clusters.annotations import AnnotationStore
s = AnnotationStore(sys.argv[1])
a = s.register_annotator("w", "token-writer")
while (plot := s.next_plot(a.id, 1)) is not None:  # the plots in order: 1 … 40
    s.submit(a.id, plot.id, {"cluster 1": [0, 1]})
    print(plot.id, flush=True)  # acknowledged: committed
"""


def test_acknowledged_writes_survive_kill_9(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.sqlite'}"
    s = AnnotationStore(url)
    _task_set(s, n_plots=40, n_points=10)
    s.close()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    acked = []
    for line in proc.stdout:
        acked.append(int(line))
        if len(acked) == 15:
            proc.kill()  # SIGKILL in the middle of the writes
            break
    proc.wait()
    s = AnnotationStore(url)
    assert s.integrity_check() == "ok"
    stored = {a["plot_id"] for a in s.annotations()}
    assert set(acked) <= stored
    s.close()


# -- kill -9 of the app server (a subprocess) during writes through the API ---------------

SERVER = r"""
import sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
from test_annotate_app import make_backends, make_demo
from pathlib import Path
b = make_backends(Path({cache!r}), Path({db!r}))
demo = make_demo(b)
demo.launch(server_name="127.0.0.1", server_port={port}, prevent_thread_lock=False, quiet=True)
"""


def _wait_up(url, proc, timeout=150):
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url + "config", timeout=2)
            return
        except Exception:
            time.sleep(0.3)
    raise TimeoutError("server did not start")


def test_kill_9_of_the_server_keeps_every_acknowledged_submission(tmp_path):
    from conftest import free_port
    from test_annotate_app import client, make_backends, seed_task_set

    db = tmp_path / "crash.sqlite"
    backends = make_backends(tmp_path, db)
    seed_task_set(backends, name="crash", target=50)
    from app.tabs.annotate import store_for
    from backends.clusters.annotations import AnnotationStore

    store = store_for(backends)
    for i in range(8):
        store.register_annotator(f"crash{i}", f"token-crash-{i}")
    store.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    code = SERVER.format(root=str(ROOT), tests=str(ROOT / "tests"), cache=str(tmp_path), db=str(db), port=port)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    acked, stop = [], threading.Event()
    try:
        _wait_up(url, proc)

        def writer(i):
            try:
                c = client(url)
                tok = f"token-crash-{i}"
                _, _, pid, _ = c.predict(f"crash{i}", tok, "crash", "lasso", api_name="/annotate_sign_in")
                while pid and not stop.is_set():
                    status, _, nxt, _ = c.predict(tok, pid, json.dumps({"cluster 1": [0, 1, i]}), "lasso",
                                                  api_name="/annotate_submit")
                    if "Stored answer" in status:
                        acked.append((f"crash{i}", int(pid)))
                    pid = nxt
            except Exception:  # the server is killed under us
                pass

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        [t.start() for t in threads]
        t0 = time.time()
        while len(acked) < 40 and time.time() - t0 < 120:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # in the middle of the writes
        proc.wait()
        stop.set()
        [t.join(timeout=30) for t in threads]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 40
    reopened = AnnotationStore(f"sqlite:///{db}")
    assert reopened.integrity_check() == "ok"
    stored = {(a["annotator"], a["plot_id"]) for a in reopened.annotations()}
    assert set(acked) <= stored, sorted(set(acked) - stored)[:5]
    assert len(stored) < 160  # it really was interrupted
    reopened.close()


def test_token_hash_settings_are_fixed_when_the_database_is_created(tmp_path):
    url = f"sqlite:///{tmp_path / 't.sqlite'}"
    first = AnnotationStore(url, token_iterations=1_000)
    first.register_annotator("ada", "token-ada")
    first.engine.dispose()
    again = AnnotationStore(url, token_iterations=99_999)  # ignored: the stored hashes use 1,000
    assert again.sign_in("ada", "token-ada").name == "ada"
    again.close()


def test_closed_sign_up_admits_only_known_annotators(store):
    ts = _task_set(store)
    assert not store.signup_open(ts)  # closed unless the admin opens it
    store.register_annotator("ada", "token-ada")
    with pytest.raises(AuthError, match="unknown name or wrong token"):
        store.sign_in("bob", "token-bob", ts)
    assert store.sign_in("ada", "token-ada", ts).name == "ada"
    store.set_signup_open(ts, True)
    assert store.sign_in("bob", "token-bob", ts).name == "bob"
