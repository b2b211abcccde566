"""Atlas tab handlers called as the browser calls them (no server)."""
import pytest

from test_app_tables import handler


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The whole app's Blocks, never launched."""
    from app.main import create_app
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(tmp_path_factory.mktemp("cache")))
    return create_app(settings, Backends(settings))


def test_a_search_while_another_corpus_is_loading_says_so(demo):
    """The map still shows digits while 'shapes' loads: a search then names the loading corpus
    instead of failing on digits ("corpus 'digits' has no aligned text encoder")."""
    import gradio as gr

    view = handler(demo, "open_corpus").fn("digits", "pca", 15, 0.1, "cosine", progress=lambda *a, **k: None)[0]
    for name, args in (("do_text_search", ("red triangles",)), ("do_search", ("label=3", False))):
        with pytest.raises(gr.Error, match="'shapes' is still loading"):
            handler(demo, name).fn(view, *args, "label", "shapes")
    assert handler(demo, "do_search").fn(view, "label=3", False, "label", "digits")[2].startswith("**")


def test_a_corpus_opens_coloured_by_a_column_with_few_values(tmp_path):
    """Not by its first column when that has a value per item (the h-space corpus's prompts): a legend
    of hundreds of entries squeezed the map to a strip."""
    import numpy as np
    import pandas as pd

    from app.main import create_app
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(tmp_path / "cache"))
    backends = Backends(settings)
    app = create_app(settings, backends)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"prompt": [f"prompt {i}" for i in range(60)], "shape": rng.choice(["circle", "star"], 60)})
    df["vector"] = list(rng.normal(size=(60, 4)).astype(np.float32))
    df.to_parquet(tmp_path / "c.parquet")
    key = backends.add_path(str(tmp_path / "c.parquet"))
    out = handler(app, "open_corpus").fn(key, "pca", 15, 0.1, "cosine", progress=lambda *a, **k: None)
    colour = [o for o in out if isinstance(o, dict) and "choices" in o][0]
    assert colour["value"] == "shape"
    out = handler(app, "open_corpus").fn("digits", "pca", 15, 0.1, "cosine", progress=lambda *a, **k: None)
    assert [o for o in out if isinstance(o, dict) and "choices" in o][0]["value"] == "label"


def test_a_first_visitor_sees_a_pca_map_at_once_then_the_umap_map(tmp_path):
    """On a fresh cache UMAP takes seconds (digits) to minutes (a large upload): the page shows a PCA
    map at once, saying so; UMAP is then computed and swapped in, keeping what was searched on the
    preview meanwhile. Once UMAP is cached it is drawn directly."""
    import gradio as gr

    from app.main import create_app
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(tmp_path / "cache"))
    app = create_app(settings, Backends(settings))
    quiet = dict(progress=lambda *a, **k: None)
    params = ("umap", 15, 0.1, "cosine")
    view, payload, info = handler(app, "open_corpus").fn("digits", *params, **quiet)[:3]
    assert view["label"].startswith("PCA for now") and "PCA for now" in payload and "**The map is PCA for now**" in info
    # a search on the preview while UMAP runs
    view, _, _, _, hits = handler(app, "do_search").fn(view, "label=3", False, "label", "digits")
    assert handler(app, "finish_map").fn(view, None, "label")[0] == gr.skip()  # UMAP not computed yet
    done_info, computed = handler(app, "compute_map").fn(view, *params, **quiet)
    assert "UMAP is done" in done_info
    # the map drawn is the one computed, even when the controls were moved while UMAP ran
    new, new_payload, table, new_info = handler(app, "finish_map").fn(view, computed, "label")
    assert new["label"].startswith("UMAP") and new["xy"] != view["xy"] and "n_neighbors=15" in new["label"]
    assert new["selected"] == hits and len(table) == len(hits)  # the search's hits stay selected
    assert "PCA for now" not in new_payload and "PCA for now" not in new_info
    # nothing left to do for a map that is not a preview
    assert handler(app, "compute_map").fn(new, *params, **quiet)[0] == gr.skip()
    assert handler(app, "finish_map").fn(new, computed, "label")[0] == gr.skip()
    again = handler(app, "open_corpus").fn("digits", *params, **quiet)[0]
    assert again["xy"] == new["xy"] and not again.get("preview")  # cached: drawn directly
    assert handler(app, "open_corpus").fn("digits", "umap", 16, 0.1, "cosine", **quiet)[0].get("preview")
