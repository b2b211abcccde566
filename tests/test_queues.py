"""Queues (issue #20 item 9): slow model work has queues of its own, one job at a time each, so the
fast endpoints never wait behind it; a caller waiting for a slow one is told its place.

Not a timed test: the layout is read from the app's event functions, and one functional check
through gradio_client asserts that atlas_neighbours is answered while a generate call is running
(and a second one waits, with its rank). bench/bench_load.py measures the latencies under load."""
from __future__ import annotations

import random
import time
from collections import defaultdict

import pytest

from backends.shapes.generator import WEIGHTS

# slow endpoint -> its queue (every event of these queues runs one at a time)
SLOW = {
    "generate": "model-generate",
    "generate_failure_search": "model-generate",
    "directions_source_prompt": "model-directions",
    "directions_source_image": "model-directions",
    "directions_discover_pca": "model-directions",
    "directions_supervised": "model-directions",
    "directions_image_specific": "model-directions",
    "directions_edit": "model-directions",
    "directions_strip": "model-directions",
    "directions_judge": "model-directions",
    "directions_map": "model-directions",
    "directions_disentanglement": "model-directions",
    "directions_noiseclr": "model-directions",
    "regions_generate": "model-regions",
    "clusters_run": "model-clusters",
    "clusters_estimate_k": "model-clusters",
    "clusters_propagate": "model-clusters",
    "atlas_project": "atlas-project",
}
FAST = ["atlas_neighbours", "atlas_search", "atlas_corpora", "atlas_text_search", "stitching_table",
        "annotate_submit", "annotate_sign_in", "directions_list", "clusters_gallery", "regions_palette"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The whole app as create_app builds it (not launched)."""
    from app.main import create_app
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(tmp_path_factory.mktemp("cache")))
    return create_app(settings, Backends(settings))


def queues(demo) -> dict[str, list]:
    """concurrency_id -> the event functions in it (gr.api endpoints and the tabs' UI events)."""
    out = defaultdict(list)
    for fn in demo.fns.values():
        if fn.queue:
            out[fn.concurrency_id].append(fn)
    return out


def limit(demo, fns) -> int | None:
    """The queue's concurrency limit as Gradio applies it: the lowest limit set by any of its events."""
    limits = [demo._queue.default_concurrency_limit if f.concurrency_limit == "default" else f.concurrency_limit
              for f in fns]
    set_ = [x for x in limits if x is not None]
    return min(set_) if set_ else None


def endpoint(demo, api_name: str):
    found = [f for f in demo.fns.values() if f.api_name == api_name]
    assert len(found) == 1, f"{api_name}: {len(found)} endpoints"
    return found[0]


def test_each_kind_of_slow_work_has_its_own_queue_of_one(demo):
    q = queues(demo)
    for name, cid in SLOW.items():
        fn = endpoint(demo, name)
        assert fn.queue, name
        assert fn.concurrency_id == cid, (name, fn.concurrency_id)
    for cid in set(SLOW.values()):
        # every event in the queue sets 1 itself: Gradio takes the lowest limit of the events pushed
        # so far, so one event left at the default would let the queue run 4 at once until another came
        assert [f.api_name for f in q[cid] if f.concurrency_limit != 1] == [], cid
        assert limit(demo, q[cid]) == 1
    # the browser's events doing the same work share the API's queue (not one queue per button)
    assert {f.name for f in q["model-generate"]} >= {"run", "first_look", "generate"}
    assert {f.name for f in q["model-regions"]} >= {"on_generate", "regions_generate"}
    assert {f.name for f in q["model-directions"]} >= {"ui_prompt", "ui_edit", "ui_pca", "ui_strip", "directions_edit"}
    assert {f.name for f in q["model-clusters"]} >= {"do_run", "do_estimate", "clusters_run"}


def test_fast_endpoints_never_share_a_queue_with_slow_work(demo):
    q = queues(demo)
    slow_ids = set(SLOW.values())
    for name in FAST:
        fn = endpoint(demo, name)
        assert fn.concurrency_id not in slow_ids, (name, fn.concurrency_id)
        assert limit(demo, q[fn.concurrency_id]) is None or limit(demo, q[fn.concurrency_id]) >= 4, name
    # the Atlas's queries: a generous limit of their own
    assert endpoint(demo, "atlas_neighbours").concurrency_id == endpoint(demo, "atlas_search").concurrency_id
    assert limit(demo, q[endpoint(demo, "atlas_neighbours").concurrency_id]) >= 8


def test_the_queue_refuses_rather_than_grows_without_bound(demo):
    # past max_size waiting events (all queues together) a request is refused at once ("Queue is
    # full"); large enough for the 50 concurrent annotators and page loads (about 4 events each)
    assert demo._queue.max_size is not None and 200 <= demo._queue.max_size <= 5000
    assert demo._queue.default_concurrency_limit == 4  # tests/test_annotate_app.py queues like this


@pytest.mark.skipif(not WEIGHTS.exists(), reason="no Shapes generator weights in assets/")
def test_neighbours_answered_while_generate_runs(atlas_app):
    from gradio_client import Client
    from gradio_client.utils import Status

    url, _ = atlas_app
    c = Client(url, verbose=False)
    c.predict("digits", "digit-0000", 10, "cosine", api_name="/atlas_neighbours")  # the index is built
    seed = random.randrange(2 ** 30)  # not an image the generator's cache holds
    first = c.submit("a red circle in the center", "", seed, 100, None, "", api_name="/generate")
    t0 = time.perf_counter()
    while first.status().code != Status.PROCESSING and not first.done():
        assert time.perf_counter() - t0 < 300, first.status()
        time.sleep(0.05)
    # a second generate waits in its queue, and its caller is told how many are ahead
    second = c.submit("a blue square", "", seed, 2, None, "", api_name="/generate")
    ranks = []
    while not first.done() and not second.done():
        st = second.status()
        if st.code == Status.IN_QUEUE and st.rank is not None:
            ranks.append((st.rank, st.queue_size))
            break
        time.sleep(0.05)
    nb = Client(url, verbose=False).predict("digits", "digit-0001", 10, "cosine", api_name="/atlas_neighbours")
    assert not first.done(), "generate (100 steps) finished before neighbours: no overlap to test"
    assert len(nb) == 10 and nb[0]["id"]
    assert ranks and ranks[0][0] == 0 and ranks[0][1] >= 1, ranks  # nobody ahead of it in the queue, one running
    img, notes = first.result(timeout=600)
    assert "DDIM steps" in notes
    second.result(timeout=600)


def test_the_load_bench_client_gets_the_same_answers_as_gradio_client(atlas_app):
    """bench/bench_load.py measures with browser-like queue sessions (bench/queue_client.py): they
    must get what gradio_client gets, defaults filled in, and user errors as errors."""
    import asyncio
    import concurrent.futures
    import sys
    from pathlib import Path

    import httpx
    from gradio_client import Client

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from queue_client import QueueClient, QueueError

    url, _ = atlas_app
    expected = Client(url, verbose=False).predict("digits", "digit-0007", api_name="/atlas_neighbours")

    async def calls():
        async with httpx.AsyncClient(timeout=120) as http:
            q = QueueClient(http, url, await QueueClient.endpoints(http, url))
            nb, _ = await q.predict("/atlas_neighbours", "digits", "digit-0007")  # k and metric left to defaults
            hits, _ = await q.predict("/atlas_search", "digits", "label=3", False)
            with pytest.raises(QueueError, match="search query is empty"):
                await q.predict("/atlas_search", "digits", "  ", False)
            with pytest.raises(QueueError, match="no endpoint"):
                await q.predict("/no_such_thing")
            return nb, hits

    # in a thread of its own: in the full suite Playwright's sync API keeps an event loop running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        nb, hits = pool.submit(asyncio.run, calls()).result(timeout=300)
    assert nb == [expected]
    assert len(hits) == 1 and len(hits[0]) > 100 and all(h.startswith("digit-") for h in hits[0])


def test_no_output_image_offers_to_share_to_the_hub(demo):
    """An image the app shows (not one the user uploads) has download and fullscreen buttons but no
    "share to Hugging Face" button: the results are the visitor's, and a hosted demo should not invite
    posting them to the Space's discussions by default."""
    import gradio as gr

    shown = [b for b in demo.blocks.values() if isinstance(b, gr.Image) and b.interactive is False]
    assert len(shown) >= 6
    sharing = [b.elem_id or b.label for b in shown if "share" in (b.buttons or [])]
    assert not sharing, sharing
