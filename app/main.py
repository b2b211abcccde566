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

    use_private_temp_dir(backends.cache.root)  # uploads and exports in a 0700 folder of this app (before any component)
    gr.set_static_paths(static_paths() + [str(backends.cache.root / "thumbs")])
    (backends.cache.root / "thumbs").mkdir(parents=True, exist_ok=True)

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
APP_CSS = ".wrap:has(> span.error) { display: none !important; }"


def app_kwargs() -> dict:
    from app.components.security import app_kwargs as _kw

    return _kw()


def launch_kwargs(settings: Settings) -> dict:
    return {
        "css": APP_CSS,
        "server_name": settings.host,
        "server_port": settings.port,
        "share": settings.share,
        "max_file_size": settings.max_upload_bytes,
        "allowed_paths": [],
        "show_error": True,
        "app_kwargs": app_kwargs(),  # one-time export links (deleted after download)
    }
