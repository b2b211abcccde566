"""create_app(settings, backends) -> gr.Blocks: composes the tabs listed in app.tabs.TABS."""
from __future__ import annotations

import importlib
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio's queue rebuilds a pandas summary of up to 10,000 past events after every event by default
# (5–22 ms each); refresh it every 1,000 events instead. Must be set before the queue is created.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")

from backends.registry import Backends  # noqa: E402  (cheap: no heavy imports at module level)
from backends.settings import Settings  # noqa: E402


def create_app(settings: Settings | None = None, backends: Backends | None = None):
    import gradio as gr

    from app.components.scatter import static_paths
    from app.tabs import TABS

    settings = settings or (backends.settings if backends else Settings.from_env())
    backends = backends or Backends(settings)
    from app.components.security import use_private_temp_dir
    from app.services.atlas import map_files_dir

    use_private_temp_dir(backends.cache.root)  # uploads and exports in a 0700 folder of this app (before any component)
    # plotly.js and regl-scatterplot (app/static), thumbnails, and the GL maps' points and tooltip files
    gr.set_static_paths(static_paths() + [str(backends.cache.root / "thumbs"), str(map_files_dir(backends))])
    (backends.cache.root / "thumbs").mkdir(parents=True, exist_ok=True)
    map_files_dir(backends).mkdir(parents=True, exist_ok=True)

    with gr.Blocks(title="Latent Atlas", fill_width=True) as demo:
        gr.Markdown("## Latent Atlas\nExplore the latent spaces of generative and representation models.")
        with gr.Tabs():
            for label, tab_id, target in TABS:
                module_name, fn_name = target.split(":")
                build = getattr(importlib.import_module(module_name), fn_name)
                with gr.Tab(label, id=tab_id):
                    build(backends)
    # Slow model work has queues of its own, one job at a time each (concurrency_id "model-generate",
    # "model-directions", "model-regions", "model-clusters", "atlas-project" in the tabs); a waiting caller
    # is told its place (the page's "queue: n/m", gradio_client's job.status().rank). max_size bounds
    # the waiting events of all queues together: past it a request is refused at once with "Queue is full".
    demo.queue(default_concurrency_limit=4, max_size=512)
    return demo


# Gradio reports an event's gr.Error twice: in a toast, and by an "Error" badge over every output of
# the failed event (it covered the Atlas map's title and the selection table after a bad search).
# The toast names what was wrong; the badges go.
#
# Cut-off text (issue #19 item 8), global rules on Gradio 6's own class names (no elem_classes), checked
# by tests/test_cut_off_text_browser.py in Chromium at 1400×1000:
# - Gallery captions: Gradio lays each one over its thumbnail on one line, 80% wide at most, ending
#   in "…" ('shapes-0-…', '0: a pink c…', 'MultiDiffusi…'). They go under the image, as wide as the
#   tile, and wrap; the preview's caption wraps too.
# - Gallery grids: columns of at least 100 px ran past a narrow panel (Clusters: the 4th of 4 was cut);
#   they shrink to fit it.
# - Dropdowns: the chosen value sits in an <input>, which cannot wrap, so it was cut at the box
#   ('PC 1 (conditional h) [cond-'). The input is sized to its value (field-sizing), with room for the
#   arrow, and a dropdown in a row is at least that wide (up to the row's width; the row wraps).
#   The options list already wraps long options.
# - Tables: a dataframe's box stays within its column (max-width) and wider content scrolls sideways
#   inside it, with a scrollbar that can be seen (Gradio's is 50% transparent). Tables whose cells
#   wrap (Clusters, the Directions library) fit their column; their headers break between words only
#   (Gradio let "cluster" break into "clu/ste/r" when the cells were narrow).
APP_CSS = """
.wrap:has(> span.error) { display: none !important; }

.gallery-container .grid-wrap .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)); }
.gallery-container .grid-container .thumbnail-item.thumbnail-lg {
  display: flex; flex-direction: column; height: auto; aspect-ratio: auto; }
.gallery-container .grid-container .thumbnail-item.thumbnail-lg > img {
  width: 100%; height: auto; aspect-ratio: 1 / 1; flex: none; }
.gallery-container .grid-container .thumbnail-item .caption-label {
  position: static; max-width: none; padding: var(--size-1) var(--size-1-5); line-height: 1.3;
  white-space: normal; text-wrap: balance; text-overflow: clip; overflow-wrap: break-word; text-align: center;
  border: none; border-top: 1px solid var(--border-color-primary); border-radius: 0; }
.gallery-container .preview .caption {
  white-space: normal; text-wrap: balance; text-overflow: clip; overflow-wrap: break-word; }

.form > .block:has(input[role="combobox"]), .row > .block:has(input[role="combobox"]) {
  min-width: auto !important; max-width: 100%; overflow: visible !important; }
.block .secondary-wrap > input[role="combobox"] {
  field-sizing: content; width: auto; min-width: 4ch; flex: 1 1 auto;
  padding-right: calc(var(--size-5) + var(--size-2)); }

.block:has(> .table-container) { max-width: 100%; }
#clusters-table table, #dir-table table { table-layout: fixed; width: 100% !important; }
#clusters-table th span.header, #dir-table th span.header { word-break: normal !important; overflow-wrap: break-word !important; }
#dir-table th, #dir-table th *, #dir-table [role=gridcell], #dir-table [role=gridcell] * {
  font-size: var(--text-xs) !important; word-break: normal !important; overflow-wrap: break-word !important; }
.table-container .virtual-table-viewport { overflow-x: auto; scrollbar-color: var(--neutral-400) transparent; }
"""


# Gradio's status tracker tells screen readers "common.complete" when an event ends: the key has no
# English text in Gradio 6.31's bundle, so the raw key was read out. Its text is given here (and
# "common.error"'s, the other key the tracker announces).
SCREEN_READER_TEXT = {"common.complete": "Complete", "common.error": "Error"}


def app_i18n():
    import gradio as gr

    return gr.I18n(en=dict(SCREEN_READER_TEXT))


def app_kwargs() -> dict:
    from app.components.security import app_kwargs as _kw

    return _kw()


def launch_kwargs(settings: Settings) -> dict:
    return {
        "css": APP_CSS,
        "i18n": app_i18n(),
        "server_name": settings.host,
        "server_port": settings.port,
        "share": settings.share,
        "max_file_size": settings.max_upload_bytes,
        "allowed_paths": [],
        "show_error": True,
        "app_kwargs": app_kwargs(),  # one-time export links (deleted after download)
    }
