"""Every table (gr.Dataframe) in the app shows its real column names before anything fills it,
and after a handler resets it: never Gradio's placeholder headers "1 | 2 | 3"."""
import pytest

ADMIN = "admin-pw"


def placeholder(headers) -> bool:
    """Gradio's headers for a table without columns: "1", "2", ... (three by default)."""
    return [str(h) for h in headers] == [str(i) for i in range(1, len(headers) + 1)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The whole app's Blocks, built as launch.py builds it but never launched."""
    from app.main import create_app
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(tmp_path_factory.mktemp("cache")), admin_password=ADMIN)
    return create_app(settings, Backends(settings))


def tables(demo):
    import gradio as gr

    return [b for b in demo.blocks.values() if isinstance(b, gr.Dataframe)]


def name(table) -> str:
    return table.elem_id or table.label or f"table {table._id}"


def handler(demo, fn_name: str):
    """The event handler (BlockFunction) registered under this Python function name."""
    hits = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == fn_name]
    assert hits, f"no handler named {fn_name}"
    return hits[0]


def test_every_table_starts_with_real_headers(demo):
    found = tables(demo)
    # Atlas 2, Directions 1, Stitching 2, Clusters 2, Annotate 6
    assert len(found) >= 13, [name(t) for t in found]
    bad = {}
    for t in found:
        headers = (t.value or {}).get("headers") or []
        if not headers or placeholder(headers) or not all(str(h).strip() for h in headers):
            bad[name(t)] = headers
    assert not bad, f"tables showing placeholder or no headers: {bad}"


def test_an_empty_reset_keeps_the_headers(demo):
    """Handlers that clear a table send an empty table with its columns, not None."""
    conf = handler(demo, "do_confusion")  # Clusters: no run yet
    (out,) = conf.outputs
    headers = out.postprocess(conf.fn({}, "label")).headers
    assert headers and not placeholder(headers), headers
    assert headers == out.value["headers"]


def test_opening_a_corpus_clears_the_neighbours_and_the_selection_with_headers(demo):
    """Atlas: a newly opened corpus has no item and no selection (the previous corpus's are gone);
    its tables keep their columns."""
    import gradio as gr

    opened = handler(demo, "open_corpus")
    out = opened.fn("digits", "pca", 15, 0.1, "cosine", progress=lambda *a, **k: None)
    assert len(out) == len(opened.outputs)
    tables = {c.label: (c, v) for c, v in zip(opened.outputs, out) if isinstance(c, gr.Dataframe)}
    table, value = tables["Neighbours"]
    assert table.elem_id == "atlas-neighbours-table"
    headers = table.postprocess(value).headers
    assert headers[:2] == ["id", "distance"] and "label" in headers, headers
    table, value = tables["Selection"]
    assert len(value) == 0 and table.postprocess(value).headers == ["id", "x", "y"]
    ids = [v for c, v in zip(opened.outputs, out) if getattr(c, "elem_id", None) == "atlas-item-id"]
    assert ids == [""]


def same_headers(demo, fn_name: str, *args):
    """Call a handler; each table it fills gets the headers that table started with."""
    import gradio as gr

    f = handler(demo, fn_name)
    out = f.fn(*args)
    outs = out if isinstance(out, tuple) else (out,)
    checked = 0
    for comp, value in zip(f.outputs, outs):
        if isinstance(comp, gr.Dataframe):
            assert comp.postprocess(value).headers == comp.value["headers"], (fn_name, name(comp))
            checked += 1
    assert checked, f"{fn_name} fills no table"


def test_annotate_admin_tables_start_with_the_columns_their_handlers_return(demo):
    same_headers(demo, "admin_create_synthetic", ADMIN, "tables", 2, 20, 30, 1, 3, 2.0, 6.0, 0.1, 2, 0, 4.0)
    same_headers(demo, "admin_sets", ADMIN)
    same_headers(demo, "admin_create_annotators", ADMIN, "ada")
    for fn_name in ("admin_progress", "admin_annotator_progress", "admin_agreement", "admin_leaderboard"):
        same_headers(demo, fn_name, ADMIN, "tables")


def test_clusters_tables_keep_their_first_columns_after_a_run(demo):
    run = handler(demo, "do_run")
    out = run.fn("digits", "kmeans", 5, "original", 10, "euclidean", 10, 0, "silhouette", 2, 6, "",
                 progress=lambda *a, **k: None)
    tables_out = [(c, v) for c, v in zip(run.outputs, out) if c.elem_id == "clusters-table"]
    (tbl, value), = tables_out
    assert tbl.postprocess(value).headers == tbl.value["headers"]
    conf = handler(demo, "do_confusion")
    (conf_tbl,) = conf.outputs
    headers = conf_tbl.postprocess(conf.fn(out[0], "label")).headers
    assert headers[:1] == conf_tbl.value["headers"] and len(headers) == 11  # cluster, then digits 0..9

