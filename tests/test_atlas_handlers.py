"""Atlas tab handlers called as the browser calls them (no server)."""
import pytest

from test_app_tables import demo, handler  # noqa: F401  (demo is a fixture)


def test_a_search_while_another_corpus_is_loading_says_so(demo):
    """The map still shows digits while 'shapes' loads: a search then names the loading corpus
    instead of failing on digits ("corpus 'digits' has no aligned text encoder")."""
    import gradio as gr

    view = handler(demo, "open_corpus").fn("digits", "pca", 15, 0.1, "cosine", progress=lambda *a, **k: None)[0]
    for name, args in (("do_text_search", ("red triangles",)), ("do_search", ("label=3", False))):
        with pytest.raises(gr.Error, match="'shapes' is still loading"):
            handler(demo, name).fn(view, *args, "label", "shapes")
    assert handler(demo, "do_search").fn(view, "label=3", False, "label", "digits")[2].startswith("**")
