"""The Annotate tab's service (app/services/annotate.py) called directly: no Blocks, no server, no
browser; a temporary SQLite store. What an annotator and the admin depend on: sign-in hands out the
first plot, an answer is stored once and the next plot follows, undo takes back the last selection,
wrong tokens and passwords are refused with a message, and the export has one row per point per answer.

(Refused tokens and passwords go through the failure limiter of app/components/security.py, which
raises AuthRefused, an InputError; gradio is never imported here.)"""
import json

import pandas as pd
import pytest

from app.components.security import AuthRefused

ADMIN = "admin-pw"


@pytest.fixture(autouse=True)
def fresh_failure_counts():
    """Each test starts with no failed attempts counted (direct calls all come from "local")."""
    from app.components.security import LIMITER

    LIMITER.reset()
    yield
    LIMITER.reset()


@pytest.fixture
def svc(tmp_path):
    from app.services.annotate import AnnotateService
    from backends.clusters.annotations import AnnotationStore
    from backends.clusters.perception import synthetic_task_specs
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(tmp_path / "cache"), annotations_db=str(tmp_path / "a.sqlite"),
                                 admin_password=ADMIN)
    # cheap token hashing for tests (fixed per database when it is created)
    AnnotationStore(settings.annotations_url, token_iterations=1_000).engine.dispose()
    service = AnnotateService(Backends(settings))
    store = service.store()
    ts = store.create_task_set("pilot", synthetic_task_specs(3, seed=1, points=(30, 50)), kind="synthetic",
                               target_annotators=5)
    store.set_signup_open(ts, True)
    return service


def _plots(svc):
    store = svc.store()
    return store.plots(store.task_set_id("pilot"))


def test_sign_in_gives_the_first_plot(svc):
    first = _plots(svc)[0]
    status, payload, plot_id, groups, actions = svc.sign_in("ann", "token-ann", "pilot")
    assert "Signed in as **ann**" in status and "submitted 0 · skipped 0 · remaining 3 of 3" in status
    assert plot_id == str(first.id) and first.position == 0
    d = json.loads(payload)
    assert len(d["x"]) == len(d["y"]) == first.n_points and d["dragmode"] == "lasso"
    assert groups == "{}" and actions == []
    assert svc.set_names() == ["pilot"]


def test_submit_stores_the_answer_once_and_advances(svc):
    store = svc.store()
    _, _, plot_id, _, _ = svc.sign_in("ann", "token-ann", "pilot")
    answer = json.dumps({"cluster 1": [0, 1, 2], "noise": [3]})
    status, payload, next_id, groups, actions = svc.submit("token-ann", plot_id, answer)
    assert "Stored answer" in status and "submitted 1" in status
    assert next_id == str(_plots(svc)[1].id) != plot_id and groups == "{}" and actions == []
    assert store.count_annotations() == 1
    # a retry of the same submission (a lost response, a double click) is acknowledged, not stored twice
    status, *_ = svc.submit("token-ann", plot_id, answer)
    assert "already stored" in status and "not duplicated" in status
    assert store.count_annotations() == 1
    status, _, last_id, _, _ = svc.skip("token-ann", next_id)
    assert "Skipped plot" in status and last_id == str(_plots(svc)[2].id)
    assert "submitted 1 · skipped 1 · remaining 1 of 3" in svc.progress("token-ann", "pilot")
    status, _, done_id, _, _ = svc.submit("token-ann", last_id, answer)
    assert done_id == "" and "All plots in this task set are done" in status


def test_submit_needs_a_plot_and_a_known_token(svc):
    from backends.errors import InputError

    svc.sign_in("ann", "token-ann", "pilot")
    with pytest.raises(InputError, match="no plot is shown: sign in first"):
        svc.submit("token-ann", " ", '{"cluster 1": [1]}')
    with pytest.raises(AuthRefused, match="unknown token: sign in again"):
        svc.submit("token-nobody", str(_plots(svc)[0].id), '{"cluster 1": [1]}')
    with pytest.raises(AuthRefused, match="unknown name or wrong token"):
        svc.sign_in("ann", "token-not-ann", "pilot")


def test_selections_replay_and_undo_removes_the_last(svc):
    _, _, plot_id, _, _ = svc.sign_in("ann", "token-ann", "pilot")
    actions, _, groups, summary = svc.select("token-ann", [], "cluster 1", plot_id, "lasso", [0, 1, 2])
    assert json.loads(groups) == {"cluster 1": [0, 1, 2]} and "**cluster 1**: 3" in summary
    actions, _, groups, _ = svc.select("token-ann", actions, "noise", plot_id, "lasso", [2, 3])
    assert json.loads(groups) == {"cluster 1": [0, 1], "noise": [2, 3]}  # a later selection moves point 2
    assert svc.select("token-ann", actions, "noise", plot_id, "lasso", [2, 3]) is None  # plotly's repeat
    assert svc.select("token-ann", actions, "noise", plot_id, "lasso", []) is None
    actions, payload, groups, _ = svc.undo("token-ann", actions, plot_id)
    assert actions == [["cluster 1", [0, 1, 2]]] and json.loads(groups) == {"cluster 1": [0, 1, 2]}
    assert json.loads(payload)["color_cat"][:4] == [0, 0, 0, json.loads(payload)["categories"].index("unassigned")]
    assert svc.undo("token-ann", actions, "") == ([], None, "{}", "Nothing to undo.")
    assert json.loads(svc.retool("token-ann", actions, plot_id, "box"))["dragmode"] == "select"
    assert svc.retool("token-ann", actions, "", "box") is None
    assert svc.new_group(actions) == "cluster 2"


def test_admin_needs_the_password(svc, tmp_path):
    for call in (lambda: svc.admin_sets("token-ann"), lambda: svc.admin_progress("", "pilot"),
                 lambda: svc.admin_export("not-it", "pilot", "csv", tmp_path)):
        with pytest.raises(AuthRefused, match="wrong admin password"):
            call()
    assert not list(tmp_path.glob("annotations-*"))


def test_admin_export_has_one_row_per_point_per_answer(svc, tmp_path):
    plot = _plots(svc)[0]
    for who in ("ann-a", "ann-b"):
        _, _, plot_id, _, _ = svc.sign_in(who, f"token-{who}", "pilot")
        assert plot_id == str(plot.id)
        svc.submit(f"token-{who}", plot_id, json.dumps({"cluster 1": list(range(10)), "noise": [10, 11]}))
    made = []

    def folder():
        made.append(tmp_path / "export")
        made[-1].mkdir()
        return made[-1]

    path = svc.admin_export(ADMIN, "pilot", "CSV", folder)
    assert path == str(tmp_path / "export" / "annotations-pilot.csv")
    ex = pd.read_csv(path)
    assert len(ex) == 2 * plot.n_points and set(ex.annotator) == {"ann-a", "ann-b"}
    for _, mine in ex.groupby("annotator"):
        assert sorted(mine.point_id) == list(range(plot.n_points))  # every point once
        assert set(mine[mine.point_id < 10].group) == {"cluster 1"}
        assert set(mine[mine.point_id >= 12].group) == {"unassigned"}
    table = svc.admin_progress(ADMIN, "pilot")
    assert table.set_index("plot_id").loc[plot.id, "answers"] == 2
    agree = svc.admin_agreement(ADMIN, "pilot")
    assert agree.set_index("plot_id").loc[plot.id, "mean_pairwise_ari"] == 1.0  # the same answer twice


def test_a_bad_export_format_is_named(svc):
    from backends.errors import InputError

    made = []
    with pytest.raises(InputError, match=r"format must be one of jsonl, csv, parquet, but is 'xlsx'"):
        svc.admin_export(ADMIN, "pilot", "xlsx", lambda: made.append(1))
    assert made == []  # no folder is made for an export that cannot happen


def test_admin_creates_task_sets_and_annotators(svc):
    from app.services.annotate import SETS_COLUMNS, TOKEN_COLUMNS
    from backends.errors import InputError

    message, table, name = svc.admin_create_synthetic(ADMIN, " syn-small ", 2, 30, 40, 1, 3, 3.0, 6.0, 0.05, 2, 7)
    assert name == "syn-small" and "**syn-small** with 2 plots" in message
    assert list(table.columns) == list(SETS_COLUMNS) and set(table.task_set) == {"pilot", "syn-small"}
    assert table.set_index("task_set").loc["syn-small", "sign_up"] == "closed"
    with pytest.raises(InputError, match="points: the minimum 40 is above the maximum 30"):
        svc.admin_create_synthetic(ADMIN, "bad", 2, 40, 30, 1, 3, 3.0, 6.0, 0.05, 2, 7)
    tokens = svc.admin_create_annotators(ADMIN, "zoe\n\n yan ")
    assert list(tokens.columns) == list(TOKEN_COLUMNS) and tokens.name.tolist() == ["zoe", "yan"]
    zoe = tokens.set_index("name").loc["zoe", "token"]
    assert "Signed in as **zoe**" in svc.sign_in("zoe", zoe, "syn-small")[0]
    with pytest.raises(AuthRefused, match="unknown name or wrong token"):  # sign-up is closed by default
        svc.sign_in("stranger", "token-stranger", "syn-small")
    assert "**open**" in svc.admin_signup(ADMIN, "syn-small", True)
    assert "Signed in as **stranger**" in svc.sign_in("stranger", "token-stranger", "syn-small")[0]
    with pytest.raises(InputError, match="names is empty"):
        svc.admin_create_annotators(ADMIN, " \n ")


def test_a_task_set_can_be_made_from_an_upload(svc, tmp_path):
    """Uploads are corpora like the bundled ones: listed for the admin (by their name) and usable."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.save(tmp_path / "mine.npy", np.concatenate([rng.normal(size=(60, 3)), rng.normal(size=(60, 3)) + 5]))
    key = svc.b.add_path(str(tmp_path / "mine.npy"))
    labels = dict((k, lab) for lab, k in svc.corpus_choices())
    assert list(labels)[0] == key and labels[key].startswith("mine.npy")
    assert "digits" in svc.corpus_names()
    msg, *_ = svc.admin_create_from_corpus(ADMIN, "from-upload", key, 2, 40, 1.0, "pca", 3, 0)
    assert "from-upload" in msg
    store = svc.store()
    assert len(store.plots(store.task_set_id("from-upload"))) == 2
