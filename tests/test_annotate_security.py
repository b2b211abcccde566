"""Issue #20, the annotation study (items 4-8): who may answer which plot, sign-up, messages that do
not tell which names exist, backoff on failed secrets, private one-time exports, CSV formula cells.

Through the store, through the limiter and files helpers, and through the app's API (gradio_client)."""
import csv
import hashlib
import io
import json
import logging
import os
import sqlite3
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from backends.clusters.annotations import (
    BAD_CREDENTIALS,
    AnnotationStore,
    AuthError,
    PlotSpec,
    csv_safe,
    escape_formula,
)
from backends.errors import InputError
from conftest import free_port

ADMIN = "admin-pw"


# ---------------------------------------------------------------------------------------
# The store


@pytest.fixture
def store(tmp_path):
    s = AnnotationStore(f"sqlite:///{tmp_path / 'a.sqlite'}", token_iterations=1_000)
    yield s
    s.close()


def _task_set(store, name, n_plots=3, n_points=20, target=2, **spec):
    rng = np.random.default_rng(0)
    return store.create_task_set(name, [PlotSpec(rng.normal(size=(n_points, 2)), **spec) for _ in range(n_plots)],
                                 target_annotators=target)


def test_a_token_answers_only_the_plot_handed_to_it(store):
    a, b = _task_set(store, "a"), _task_set(store, "b")
    ada = store.register_annotator("ada", "token-ada")
    store.sign_in("ada", "token-ada", a)
    p = store.next_plot(ada.id, a)
    other_in_a = [q.id for q in store.plots(a) if q.id != p.id][0]  # not shown yet
    in_b = store.plots(b)[0].id  # a task set ada never signed into
    for pid in (other_in_a, in_b):
        with pytest.raises(InputError, match="not the plot you were given"):
            store.submit(ada.id, pid, {"cluster 1": [0, 1]})
        with pytest.raises(InputError, match="not the plot you were given"):
            store.submit(ada.id, pid, skipped=True)
        with pytest.raises(InputError, match="not the plot you were given"):
            store.handed(ada.id, pid)
    assert store.count_annotations() == 0
    assert store.handed(ada.id, p.id).id == p.id
    assert store.submit(ada.id, p.id, {"cluster 1": [0, 1]}).created
    assert store.submit(ada.id, p.id, {"cluster 1": [1, 0]}).created is False  # a retry is still acknowledged
    with pytest.raises(InputError, match="not the plot you were given"):
        store.handed(ada.id, p.id)  # answered: no longer handed out


def test_a_handed_plot_stays_handed_until_it_is_answered(store):
    ts = _task_set(store, "pilot", target=1)
    ada, bob = store.register_annotator("ada", "token-ada"), store.register_annotator("bob", "token-bob")
    first = store.next_plot(ada.id, ts)
    store.submit(bob.id, store.next_plot(bob.id, ts).id, {"cluster 1": [0]})  # bob fills the same plot
    assert store.next_plot(ada.id, ts).id == first.id  # a second sign-in (another tab) gets the same plot
    store.submit(ada.id, first.id, skipped=True)
    assert store.next_plot(ada.id, ts).id != first.id


def test_sign_up_is_closed_by_default_and_opened_per_task_set(store):
    a, b = _task_set(store, "a"), _task_set(store, "b")
    assert not store.signup_open(a) and not store.signup_open(b)
    assert [t["signup_open"] for t in store.task_sets()] == [False, False]
    with pytest.raises(AuthError):
        store.sign_in("new", "token-new", a)
    with pytest.raises(AuthError):
        store.sign_in("new", "token-new")  # no task set: never registers
    store.set_signup_open(a, True)
    assert store.signup_open(a) and not store.signup_open(b)
    with pytest.raises(AuthError):
        store.sign_in("other", "token-other", b)
    assert store.sign_in("new", "token-new", a).name == "new"
    assert store.sign_in("new", "token-new", b).name == "new"  # known now: signs in anywhere
    with pytest.raises(InputError, match="unknown task set"):
        store.set_signup_open(999, True)


def test_unknown_name_and_wrong_token_get_the_same_message(store):
    ts = _task_set(store, "pilot")
    store.register_annotator("alice", "token-alice")
    errors = []
    for name, token in (("alice", "token-wrong"), ("nobody", "token-wrong"), ("nobody", "token-alice")):
        with pytest.raises(AuthError) as err:
            store.sign_in(name, token, ts)
        errors.append(str(err.value))
    assert errors == [BAD_CREDENTIALS] * 3
    assert "alice" not in BAD_CREDENTIALS and "nobody" not in BAD_CREDENTIALS


OLD_SCHEMA = """
CREATE TABLE store_meta ("key" VARCHAR(64) NOT NULL, value TEXT, PRIMARY KEY ("key"));
CREATE TABLE task_sets (id INTEGER NOT NULL, name VARCHAR(128) NOT NULL, kind VARCHAR(32) NOT NULL,
    params TEXT NOT NULL, target_annotators INTEGER NOT NULL, created_at FLOAT NOT NULL, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE annotators (id INTEGER NOT NULL, name VARCHAR(64) NOT NULL, token_hash VARCHAR(64) NOT NULL,
    created_at FLOAT NOT NULL, PRIMARY KEY (id), UNIQUE (name), UNIQUE (token_hash));
CREATE TABLE plots (id INTEGER NOT NULL, task_set_id INTEGER NOT NULL, position INTEGER NOT NULL,
    n_points INTEGER NOT NULL, points TEXT NOT NULL, meta TEXT NOT NULL, PRIMARY KEY (id),
    CONSTRAINT uq_plot_position UNIQUE (task_set_id, position), FOREIGN KEY(task_set_id) REFERENCES task_sets (id));
CREATE INDEX ix_plots_task_set_id ON plots (task_set_id);
CREATE TABLE plot_views (annotator_id INTEGER NOT NULL, plot_id INTEGER NOT NULL, started_at FLOAT NOT NULL,
    PRIMARY KEY (annotator_id, plot_id), FOREIGN KEY(annotator_id) REFERENCES annotators (id),
    FOREIGN KEY(plot_id) REFERENCES plots (id));
CREATE TABLE annotations (id INTEGER NOT NULL, annotator_id INTEGER NOT NULL, plot_id INTEGER NOT NULL,
    skipped BOOLEAN NOT NULL, groups TEXT NOT NULL, started_at FLOAT, submitted_at FLOAT NOT NULL, PRIMARY KEY (id),
    CONSTRAINT uq_annotation_once UNIQUE (annotator_id, plot_id), FOREIGN KEY(annotator_id) REFERENCES annotators (id),
    FOREIGN KEY(plot_id) REFERENCES plots (id));
CREATE INDEX ix_annotations_plot_id ON annotations (plot_id);
"""


def _old_database(path: Path) -> None:
    """A database as the store wrote it before issue #20: no sign-up column, no plot_assignments;
    the old store-wide open_signup setting; ada answered plot 1 and was shown plot 2."""
    salt, iterations = "00" * 16, 1_000
    token_hash = hashlib.pbkdf2_hmac("sha256", b"token-ada", bytes.fromhex(salt), iterations).hex()
    points = json.dumps({"x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 0.0], "source_ids": ["a", "b", "c"], "truth": None})
    con = sqlite3.connect(path)
    con.executescript(OLD_SCHEMA)
    con.executemany("INSERT INTO store_meta VALUES (?, ?)",
                    [("token_salt", salt), ("token_iterations", str(iterations)), ("open_signup", "1")])
    con.execute("INSERT INTO task_sets VALUES (1, 'old', 'custom', '{}', 2, 0)")
    con.executemany("INSERT INTO plots VALUES (?, 1, ?, 3, ?, '{}')", [(1, 0, points), (2, 1, points), (3, 2, points)])
    con.execute("INSERT INTO annotators VALUES (1, 'ada', ?, 0)", (token_hash,))
    con.executemany("INSERT INTO plot_views VALUES (1, ?, ?)", [(1, 10.0), (2, 20.0)])
    con.execute("INSERT INTO annotations VALUES (1, 1, 1, 0, '{\"cluster 1\":[0,1]}', 10.0, 15.0)")
    con.commit()
    con.close()


def test_a_database_of_the_old_schema_opens_with_its_data(tmp_path):
    path = tmp_path / "old.sqlite"
    _old_database(path)
    s = AnnotationStore(f"sqlite:///{path}")
    try:
        assert s.integrity_check() == "ok"
        (ts,) = s.task_sets()
        assert ts["name"] == "old" and ts["signup_open"] is False  # the old store-wide "open" is not carried over
        ada = s.sign_in("ada", "token-ada", ts["id"])  # the stored token hash still works
        assert [a["groups"] for a in s.annotations()] == [{"cluster 1": [0, 1]}]
        assert s.handed_plot(ada.id, ts["id"]) == 2  # the plot ada was looking at is still hers to answer
        assert s.submit(ada.id, 2, {"noise": [2]}).created
        assert s.next_plot(ada.id, ts["id"]).id == 3
        with pytest.raises(AuthError):
            s.sign_in("bob", "token-bob", ts["id"])
    finally:
        s.close()
    again = AnnotationStore(f"sqlite:///{path}")  # migrated once; opening again changes nothing
    assert again.count_annotations() == 2 and again.handed_plot(1, 1) == 3
    again.close()


def test_csv_cells_that_would_be_formulas_are_escaped(store, tmp_path):
    import pandas as pd

    for cell, escaped in (("=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"), ("+1", "'+1"),
                          ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
                          ("plain", "plain"), ("a=b", "a=b"), (-1.5, -1.5), (None, None)):
        assert escape_formula(cell) == escaped
    df = csv_safe(pd.DataFrame({"name": ["=1+1", "ok"], "x": [-1.0, 2.0], "=col": [1, 2]}))
    assert df["name"].tolist() == ["'=1+1", "ok"] and df["x"].tolist() == [-1.0, 2.0] and "'=col" in df.columns

    name = '=HYPERLINK("http://evil.example","click")'
    ts = _task_set(store, "+cmd", n_plots=1, n_points=4, source_ids=["-1", "@x", "=2", "ok"])
    who = store.register_annotator(name, "token-evil")
    store.submit(who.id, store.next_plot(who.id, ts).id, {"cluster 1": [0, 1]})
    out = tmp_path / "out.csv"
    assert store.export(out, "csv", ts) == 4
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["annotator"] for r in rows} == {"'" + name} and {r["task_set"] for r in rows} == {"'+cmd"}
    assert [r["source_id"] for r in rows] == ["'-1", "'@x", "'=2", "ok"]
    assert all(not r[k].startswith(("=", "+", "-", "@")) for r in rows for k in ("annotator", "task_set", "source_id"))
    assert any(float(r["x"]) < 0 for r in rows)  # numbers are numbers, not escaped text
    jsonl = tmp_path / "out.jsonl"
    store.export(jsonl, "jsonl", ts)
    assert json.loads(jsonl.read_text().splitlines()[0])["annotator"] == name  # JSON keeps the data as it is


# ---------------------------------------------------------------------------------------
# The limiter and the files helpers


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_backoff_per_client_doubles_and_ends_after_a_quiet_window():
    from app.components.security import FailureLimiter, TooManyAttempts

    clock = Clock()
    lim = FailureLimiter(max_failures=3, window_s=60, base_delay_s=1, max_delay_s=8, global_max_failures=100,
                         clock=clock)
    for _ in range(2):
        lim.failure("1.2.3.4")
        lim.check("1.2.3.4")  # below the limit: no wait
    assert lim.failure("1.2.3.4") == (3, 3)
    with pytest.raises(TooManyAttempts, match=r"too many attempts, try again in 1 s"):
        lim.check("1.2.3.4")
    lim.check("5.6.7.8")  # another client is not held up
    clock.t += 1
    lim.check("1.2.3.4")  # the wait is over; the next failure waits twice as long
    lim.failure("1.2.3.4")
    assert lim.retry_after("1.2.3.4") == 2
    clock.t += 2 + 61  # the lock ran out, then a quiet window: counting starts again
    lim.check("1.2.3.4")
    assert lim.failure("1.2.3.4")[0] == 1


def test_backoff_doubles_up_to_the_cap():
    from app.components.security import FailureLimiter

    clock = Clock()
    lim = FailureLimiter(max_failures=2, window_s=60, base_delay_s=1, max_delay_s=8, global_max_failures=100,
                         clock=clock)
    waits = []
    for _ in range(6):
        lim.failure("c")
        waits.append(lim.retry_after("c"))
    assert waits == [0, 1, 2, 4, 8, 8]


def test_backoff_for_everyone_after_many_clients_fail():
    from app.components.security import FailureLimiter, TooManyAttempts

    lim = FailureLimiter(max_failures=100, global_max_failures=4, clock=Clock())
    for i in range(4):
        lim.failure(f"10.0.0.{i}")
    with pytest.raises(TooManyAttempts):
        lim.check("10.0.0.99")  # a client that never failed waits too


def test_auth_attempt_logs_one_line_and_no_traceback(caplog):
    import gradio as gr

    from app.components.errors import guard
    from app.components.security import AuthRefused, FailureLimiter, auth_attempt

    lim = FailureLimiter(max_failures=2, base_delay_s=30, clock=Clock())

    def check(secret):
        if secret != "right":
            raise AuthError("wrong admin password")
        return "ok"

    with caplog.at_level(logging.WARNING, logger="latent_atlas.auth"):
        assert auth_attempt("admin password", check, "right", failures=(AuthError,), limiter=lim) == "ok"
        for _ in range(2):
            with pytest.raises(AuthRefused, match="^wrong admin password$"):  # plain Python: the services call it
                auth_attempt("admin password", check, "guess", failures=(AuthError,), limiter=lim)
        with pytest.raises(AuthRefused, match="too many attempts, try again in 30 s"):
            auth_attempt("admin password", check, "right", failures=(AuthError,), limiter=lim)
    lines = [r.getMessage() for r in caplog.records if r.name == "latent_atlas.auth"]
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    assert lines[0].startswith("failed admin password from local: wrong admin password")
    assert lines[2].startswith("refused admin password from local")
    assert "guess" not in " ".join(lines)  # the secret tried is never logged
    assert all(r.exc_info is None for r in caplog.records)
    # in a tab's handler it reaches the page as a message, without a traceback in the log
    fresh = FailureLimiter(max_failures=2, base_delay_s=30, clock=Clock())
    with pytest.raises(gr.Error) as err:
        guard(auth_attempt)("admin password", check, "guess", failures=(AuthError,), limiter=fresh)
    assert err.value.message == "wrong admin password" and err.value.print_exception is False


def test_private_temp_dir_is_0700_under_the_cache_dir_and_cleans_up(tmp_path, monkeypatch):
    import subprocess
    import sys

    from app.components.security import remove_stale_runs

    cache = tmp_path / "cache"
    code = ("import os, sys; os.environ.pop('GRADIO_TEMP_DIR', None)\n"
            "from app.components.security import use_private_temp_dir\n"
            "d = use_private_temp_dir(sys.argv[1]); print(d); print(os.environ['GRADIO_TEMP_DIR'])\n"
            "(d / 'upload.txt').write_text('x')\n"
            "assert use_private_temp_dir(sys.argv[1]) == d  # the first call wins\n")
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    out = subprocess.run([sys.executable, "-c", code, str(cache)], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout.split()
    run = Path(out[0])
    assert out[1] == str(run) and run.parent == (cache / "tmp").resolve()
    assert stat.S_IMODE((cache / "tmp").stat().st_mode) == 0o700
    assert not run.exists()  # removed at exit
    # a folder left by a killed run (its pid is gone) is removed by the next run
    stale = cache / "tmp" / "run-999999999-abc"
    stale.mkdir()
    assert remove_stale_runs(cache / "tmp") == [stale] and not stale.exists()


def test_export_folders_are_private_and_files_go_after_their_ttl(tmp_path, monkeypatch):
    from app.components.security import SERVE_ONCE, new_export_dir, serve_once

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    folder = new_export_dir()
    assert folder.parent == tmp_path / "gradio" / "la-exports"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    f = folder / "annotations-x.csv"
    f.write_text("a\n")
    serve_once(f, ttl_s=0.2)
    assert f in SERVE_ONCE
    deadline = time.time() + 10
    while (f.exists() or folder.exists()) and time.time() < deadline:
        time.sleep(0.05)
    assert not f.exists() and not folder.exists() and f not in SERVE_ONCE
    old = new_export_dir()  # left behind by a killed server: swept once older than the TTL
    os.utime(old, (0, 0))
    new_export_dir()
    assert not old.exists()


# ---------------------------------------------------------------------------------------
# Through the app's API


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The Annotate tab with the app's own temp folder (0700, under the cache dir), the one-time
    file middleware, sign-up closed on 'closed' and 'other', open on 'open'."""
    from app.components.security import LIMITER, app_kwargs, use_private_temp_dir
    from app.tabs.annotate import store_for
    from test_annotate_app import make_backends, make_demo

    root = tmp_path_factory.mktemp("annotate-security")
    saved = os.environ.pop("GRADIO_TEMP_DIR", None)
    temp = use_private_temp_dir(root)  # this module's server only; restored below
    try:
        backends = make_backends(root, root / "annotations.sqlite")
        store = store_for(backends)
        ids = {name: _task_set(store, name, n_plots=3, n_points=30, target=3) for name in ("closed", "other", "open")}
        store.set_signup_open(ids["open"], True)
        store.register_annotator("alice", "token-alice")
        demo = make_demo(backends, open_signup=False)
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    app_kwargs=app_kwargs())
        LIMITER.reset()
        yield {"url": f"http://127.0.0.1:{port}/", "backends": backends, "store": store, "ids": ids, "temp": temp,
               "demo": demo}
        demo.close()
    finally:
        if saved is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = saved
        LIMITER.reset()


@pytest.fixture(autouse=True)
def fresh_failure_counts():
    from app.components.security import LIMITER

    LIMITER.reset()
    yield
    LIMITER.reset()


def client(url, **kw):
    from gradio_client import Client

    return Client(url, verbose=False, ssl_verify=False, **kw)


def _error(c, *args, api_name):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as err:
        c.predict(*args, api_name=api_name)
    return str(err.value)


def test_the_app_uses_a_private_temp_folder(app):
    temp = app["temp"]
    assert stat.S_IMODE(temp.stat().st_mode) == 0o700 and stat.S_IMODE(temp.parent.stat().st_mode) == 0o700
    assert temp.parent == (app["backends"].cache.root / "tmp").resolve()


def test_api_sign_up_is_closed_by_default_and_the_admin_opens_it(app):
    c = client(app["url"])
    msg = _error(c, "stranger", "token-stranger", "closed", "lasso", api_name="/annotate_sign_in")
    assert BAD_CREDENTIALS in msg
    status, *_ = c.predict("walk-in", "token-walk-in", "open", "lasso", api_name="/annotate_sign_in")
    assert "Signed in as **walk-in**" in status
    assert "wrong admin password" in _error(c, "guess", "closed", True, api_name="/annotate_admin_signup")
    assert "open" in c.predict(ADMIN, "closed", True, api_name="/annotate_admin_signup")
    try:
        status, *_ = c.predict("stranger", "token-stranger", "closed", "lasso", api_name="/annotate_sign_in")
        assert "Signed in as **stranger**" in status
    finally:
        assert "closed" in c.predict(ADMIN, "closed", False, api_name="/annotate_admin_signup")
    table = c.predict(ADMIN, api_name="/annotate_admin_task_sets")
    sign_up = {r[0]: dict(zip(table["headers"], r))["sign_up"] for r in table["data"]}
    assert sign_up == {"closed": "closed", "other": "closed", "open": "open"}


def test_api_unknown_name_and_wrong_token_read_the_same(app):
    c = client(app["url"])
    unknown = _error(c, "nobody-here", "token-whatever", "closed", "lasso", api_name="/annotate_sign_in")
    wrong = _error(c, "alice", "token-not-alice", "closed", "lasso", api_name="/annotate_sign_in")
    assert unknown == wrong and "alice" not in wrong and "nobody" not in unknown


def test_api_a_token_submits_only_the_plot_handed_to_it(app):
    store, ids = app["store"], app["ids"]
    c = client(app["url"])
    _, _, pid, _ = c.predict("alice", "token-alice", "closed", "lasso", api_name="/annotate_sign_in")
    not_shown = [p.id for p in store.plots(ids["closed"]) if p.id != int(pid)][0]
    never_signed_into = store.plots(ids["other"])[0].id
    groups = json.dumps({"cluster 1": [0, 1, 2]})
    for other in (not_shown, never_signed_into):
        assert "not the plot you were given" in _error(c, "token-alice", str(other), groups, "lasso",
                                                       api_name="/annotate_submit")
        assert "not the plot you were given" in _error(c, "token-alice", str(other), "lasso",
                                                       api_name="/annotate_skip")
    status, *_ = c.predict("token-alice", pid, groups, "lasso", api_name="/annotate_submit")
    assert "Stored answer" in status
    assert {a["plot_id"] for a in store.annotations(include_skipped=True) if a["annotator"] == "alice"} == {int(pid)}


def test_api_undo_needs_the_token_of_the_plot(app):
    store, ids = app["store"], app["ids"]
    c = client(app["url"])
    _, _, pid, _ = c.predict("walk-in-2", "token-walk-in-2", "open", "lasso", api_name="/annotate_sign_in")
    actions = [["cluster 1", [0, 1]], ["cluster 2", [2]]]  # the UI keeps these in the session (gr.State)
    assert "token" in _error(c, "", pid, "lasso", api_name="/annotate_undo")
    assert "unknown token" in _error(c, "token-nobody", pid, "lasso", api_name="/annotate_undo")
    other = store.plots(ids["closed"])[0].id
    assert "not the plot you were given" in _error(c, "token-walk-in-2", str(other), "lasso",
                                                   api_name="/annotate_undo")
    payload, groups, _ = c.predict("token-walk-in-2", pid, "lasso", api_name="/annotate_undo")
    assert json.loads(groups) == {} and len(json.loads(payload)["x"]) == 30
    # the UI-only events that redraw a plot ask for the token too
    import gradio as gr

    fns = {f.fn.__name__: f.fn for f in app["demo"].fns.values()}
    with pytest.raises(gr.Error):
        fns["retool"]("", actions, str(other), "box")
    with pytest.raises((gr.Error, InputError)):
        fns["retool"]("token-walk-in-2", actions, str(other), "box")


def test_api_wrong_secrets_back_off(app, capfd, caplog):
    from app.components.security import LIMITER

    LIMITER.configure(max_failures=3, base_delay_s=30)
    c = client(app["url"])
    with caplog.at_level(logging.WARNING, logger="latent_atlas.auth"):
        assert "wrong admin password" in _error(c, "guess-1", api_name="/annotate_admin_task_sets")
        assert BAD_CREDENTIALS in _error(c, "alice", "token-guess", "closed", "lasso", api_name="/annotate_sign_in")
        assert "unknown token" in _error(c, "token-guess", "closed", api_name="/annotate_progress")
        for args, ep in (((ADMIN,), "/annotate_admin_task_sets"),  # even the right secrets wait now
                         (("alice", "token-alice", "closed", "lasso"), "/annotate_sign_in")):
            msg = _error(c, *args, api_name=ep)
            assert "too many attempts, try again in" in msg and int(msg.split(" in ")[-1].split()[0]) >= 29
    lines = [r.getMessage() for r in caplog.records if r.name == "latent_atlas.auth"]
    assert sum(line.startswith("failed ") for line in lines) == 3
    assert sum(line.startswith("refused ") for line in lines) == 2
    assert "Traceback" not in capfd.readouterr().err  # one line each, no 2 KB traceback
    LIMITER.reset()
    assert c.predict(ADMIN, api_name="/annotate_admin_task_sets")["data"]


def _wait_until_no_exports(root: Path, seconds: float = 5.0) -> bool:
    """True once no exported file is left under root. The server removes each file after its
    download and then its folder, so a folder may vanish while it is being listed."""
    deadline = time.time() + seconds
    while True:
        try:
            if not list(root.glob("export-*/*")):
                return True
        except FileNotFoundError:  # a folder removed between listing root and listing it
            pass
        if time.time() > deadline:
            return False
        time.sleep(0.05)


def test_api_export_is_private_served_once_and_csv_safe(app):
    import urllib.error
    import urllib.request

    evil = '=HYPERLINK("http://evil.example","x")'
    c = client(app["url"])
    tokens = dict(c.predict(ADMIN, evil, api_name="/annotate_admin_create_annotators")["data"])
    _, _, pid, _ = c.predict(evil, tokens[evil], "other", "lasso", api_name="/annotate_sign_in")
    c.predict(tokens[evil], pid, json.dumps({"cluster 1": [0, 1]}), "lasso", api_name="/annotate_submit")

    raw = client(app["url"], download_files=False)
    f = raw.predict(ADMIN, "other", "csv", api_name="/annotate_admin_export")
    served = Path(f["path"])
    assert served.exists() and app["temp"] in served.parents and "la-exports" in served.parts
    assert stat.S_IMODE(served.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(served.parent.parent.stat().st_mode) == 0o700
    with urllib.request.urlopen(f["url"]) as r:
        assert r.status == 200
        text = r.read().decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["annotator"] for r in rows} == {"'" + evil}
    deadline = time.time() + 5
    while (served.exists() or served.parent.exists()) and time.time() < deadline:  # the file, then its folder
        time.sleep(0.05)
    assert not served.exists() and not served.parent.exists()  # gone after its download
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f["url"])  # the link works once
    assert err.value.code in (403, 404)
    assert "wrong admin password" in _error(c, "guess", "other", "csv", api_name="/annotate_admin_export")
    # gradio_client downloads the file itself: that download is the one
    path = c.predict(ADMIN, "other", "csv", api_name="/annotate_admin_export")
    assert "'=HYPERLINK" in Path(path).read_text()
    assert _wait_until_no_exports(app["temp"] / "la-exports")  # its copy removed once downloaded
