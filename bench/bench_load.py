"""Load: N concurrent gradio_client clients against the whole app for T seconds (issue #20 item 9).

    python bench/bench_load.py                       # 20 clients, 60 s mixed (after a 15 s fast-only phase)
    python bench/bench_load.py --clients 8 --seconds 20 --fast-seconds 10

The app is launched in this process (loopback, a free port, a temporary cache); the clients run as
threads in a second process (only gradio_client imported there), so they do not share the server's
GIL. After warming the digits map (atlas_project once) and one call of each slow endpoint, two
phases run with the same clients, each a closed loop (a client sends its next request when the last
one is answered) that stops sending at the phase's deadline:

1. fast only: atlas_neighbours, atlas_search, atlas_corpora;
2. the mix: mostly the fast ones, some generate (Shapes, 20 steps), some directions_edit or
   regions_generate, some clusters_run (seeds vary, so no answer comes from a cache).

The clients are browser-like queue sessions on one asyncio loop (bench/queue_client.py: what
the page sends, a few ms of client CPU a request) unless `--client gradio_client` asks for a
gradio_client.Client per user (about 80 ms of client CPU a request: 20 of them on the server's
2 cores measure mostly themselves).

Printed: per endpoint and phase the requests, errors, p50 and p95 (seconds, from send to answer,
queueing included); for the slow endpoints the most requests seen ahead in their queue
(job.status().rank, what a gradio_client caller is told while it waits); the CPU seconds the
server and the client process used in each phase, with the machine's load average (on a busy
machine the clients' own CPU, about 60 ms a gradio_client request, is in every latency); the
process's RSS at launch, at the start of the load and at the end; and for each fast endpoint
p95(mix) / p95(fast only). Target: neighbours / search p95 <= 1 s under the mix.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST = ("atlas_neighbours", "atlas_search", "atlas_corpora")
# weights of the mixed phase: mostly fast reads, some model work of each kind
MIX = {"atlas_neighbours": 40, "atlas_search": 30, "atlas_corpora": 5, "generate": 10, "directions_edit": 5,
       "regions_generate": 5, "clusters_run": 5}
PROMPTS = ["a red circle in the center", "a small blue square", "a large green triangle on the left",
           "a yellow star in the top right corner", "a purple heart at the bottom"]
MAX_REQUESTS_PER_CLIENT = 100_000  # a bound on every client's loop besides the deadline
CANVAS = object()  # stands for the uploaded canvas in a request's arguments


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb() -> float:
    """Resident set size of this process (the server), in MB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2 ** 20
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# -- the client process -------------------------------------------------------------------------

def _request(name: str, rng: random.Random, spec: dict) -> tuple[str, tuple, dict]:
    """(api_name, args) of one request of kind `name`."""
    if name == "atlas_neighbours":
        return "/atlas_neighbours", ("digits", f"digit-{rng.randrange(spec['n_digits']):04d}", 10, "cosine")
    if name == "atlas_search":
        q = rng.choice([f"label={rng.randrange(10)}", f"digit-0{rng.randrange(18):02d}", f"^digit-00{rng.randrange(10)}"])
        return "/atlas_search", ("digits", q, q.startswith("^"))
    if name == "atlas_corpora":
        return "/atlas_corpora", ()
    if name == "generate":
        return "/generate", (rng.choice(PROMPTS), "", rng.randrange(2 ** 30), spec["steps"], None, "")
    if name == "directions_edit":
        return "/directions_edit", (spec["source"], [spec["direction"]], [round(rng.uniform(-1.5, 1.5), 3) or 0.5],
                                    0.0, 1.0)
    if name == "regions_generate":
        return "/regions_generate", (CANVAS, {"red": "a red circle", "blue": "a blue star"},
                                     "", "spatext", rng.randrange(2 ** 30), spec["steps"])
    if name == "clusters_run":
        # seed < 2,147,483: FAISS takes seed * 1000 + restart as a C int (a larger one is refused)
        return "/clusters_run", ("digits", "kmeans", rng.randrange(3, 13), "original", 10, "cosine", 10,
                                 rng.randrange(2_000_000))
    raise ValueError(name)


def client_process(spec: dict) -> dict:
    """Run spec['clients'] clients for spec['seconds']; returns the samples."""
    if spec["client"] == "queue":
        import asyncio

        return asyncio.run(queue_clients(spec))
    return gradio_clients(spec)


async def queue_clients(spec: dict) -> dict:
    """The clients as tasks on one asyncio loop, each a browser-like session (bench/queue_client.py)."""
    import asyncio

    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from queue_client import QueueClient

    weights = spec["weights"]
    names, w = list(weights), list(weights.values())
    samples: list[dict] = []
    limits = httpx.Limits(max_connections=4 * spec["clients"], max_keepalive_connections=2 * spec["clients"])
    async with httpx.AsyncClient(timeout=httpx.Timeout(spec["timeout"]), limits=limits) as http:
        endpoints = await QueueClient.endpoints(http, spec["url"])
        sessions = [QueueClient(http, spec["url"], endpoints) for _ in range(spec["clients"])]
        canvases = await asyncio.gather(*(s.upload(spec["canvas"]) for s in sessions))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + spec["seconds"]

        async def client(i: int):
            rng = random.Random(spec["seed"] * 1000 + i)
            for _ in range(MAX_REQUESTS_PER_CLIENT):
                if loop.time() >= deadline:
                    break
                name = rng.choices(names, w)[0]
                api, args = _request(name, rng, spec)
                args = tuple(canvases[i] if a is CANVAS else a for a in args)
                rank, err = None, None
                t0 = time.perf_counter()
                try:
                    _, rank = await asyncio.wait_for(sessions[i].predict(api, *args), spec["timeout"])
                except Exception as exc:  # noqa: BLE001
                    err = f"{type(exc).__name__}: {exc}"[:300]
                samples.append({"name": name, "s": time.perf_counter() - t0, "ok": err is None, "error": err,
                                "rank": rank if name not in FAST else None})

        await asyncio.gather(*(client(i) for i in range(spec["clients"])))
    return {"samples": samples, "stuck": 0}


def gradio_clients(spec: dict) -> dict:
    """The clients as gradio_client.Client threads (about 80 ms of client CPU a request)."""
    import threading

    from gradio_client import Client, handle_file

    weights = spec["weights"]
    names, w = list(weights), list(weights.values())
    samples: list[dict] = []  # {"name", "s", "ok", "error", "rank"}
    lock = threading.Lock()
    ready = threading.Barrier(spec["clients"])

    def client(i: int):
        rng = random.Random(spec["seed"] * 1000 + i)
        try:
            c = Client(spec["url"], verbose=False)
        except Exception as exc:  # noqa: BLE001
            with lock:
                samples.append({"name": "connect", "s": 0.0, "ok": False, "error": repr(exc)[:300], "rank": None})
            ready.abort()
            return
        try:
            ready.wait(timeout=120)
        except threading.BrokenBarrierError:
            return
        deadline = time.perf_counter() + spec["seconds"]
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if time.perf_counter() >= deadline:
                break
            name = rng.choices(names, w)[0]
            api, args = _request(name, rng, spec)
            args = tuple(handle_file(spec["canvas"]) if a is CANVAS else a for a in args)
            rank, err = None, None
            t0 = time.perf_counter()
            try:
                job = c.submit(*args, api_name=api)
                if name not in FAST:  # what a waiting caller is told: how many are ahead in this queue
                    while not job.done() and time.perf_counter() - t0 < spec["timeout"]:
                        st = job.status()
                        if st.rank is not None:
                            rank = max(rank or 0, st.rank)
                        time.sleep(0.1)
                job.result(timeout=max(1.0, spec["timeout"] - (time.perf_counter() - t0)))
            except Exception as exc:  # noqa: BLE001
                err = f"{type(exc).__name__}: {exc}"[:300]
            with lock:
                samples.append({"name": name, "s": time.perf_counter() - t0, "ok": err is None, "error": err,
                                "rank": rank})

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(spec["clients"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=spec["seconds"] + spec["timeout"] + 180)
    return {"samples": samples, "stuck": sum(t.is_alive() for t in threads)}


# -- the server process ---------------------------------------------------------------------------

def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarise(samples: list[dict]) -> dict[str, dict]:
    out = {}
    for name in sorted({s["name"] for s in samples}, key=lambda n: (n not in FAST, n)):
        ss = [s for s in samples if s["name"] == name]
        ok = [s["s"] for s in ss if s["ok"]]
        ranks = [s["rank"] for s in ss if s["rank"] is not None]
        out[name] = {"requests": len(ss), "errors": len(ss) - len(ok), "p50": percentile(ok, 50),
                     "p95": percentile(ok, 95), "max_ahead": max(ranks) if ranks else None,
                     "first_error": next((s["error"] for s in ss if not s["ok"]), None)}
    return out


def print_table(title: str, table: dict[str, dict], seconds: float):
    print(f"\n{title}")
    print(f"  {'endpoint':<18} {'requests':>8} {'req/s':>6} {'errors':>6} {'p50 s':>7} {'p95 s':>7} {'max ahead':>9}")
    for name, r in table.items():
        ahead = "" if r["max_ahead"] is None else str(r["max_ahead"])
        print(f"  {name:<18} {r['requests']:>8} {r['requests'] / seconds:>6.1f} {r['errors']:>6} {r['p50']:>7.3f} "
              f"{r['p95']:>7.3f} {ahead:>9}")
    for name, r in table.items():
        if r["first_error"]:
            print(f"  first error of {name}: {r['first_error']}")


def cpu_seconds() -> tuple[float, float]:
    """CPU time (user + system) of this process (the server, all its threads) and of its finished children."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def run_phase(spec: dict) -> dict:
    """One phase in a client process; adds the CPU seconds the server and the clients used, and the load average."""
    (s0, c0), t0 = cpu_seconds(), time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--client-spec", json.dumps(spec)], capture_output=True,
                          text=True, timeout=spec["seconds"] + spec["timeout"] + 300)
    if proc.returncode != 0:
        raise RuntimeError(f"client process failed:\n{proc.stderr[-3000:]}")
    (s1, c1), wall = cpu_seconds(), time.perf_counter() - t0
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["cpu"] = {"wall": wall, "server": s1 - s0, "clients": c1 - c0, "load": os.getloadavg()[0]}
    return out


def print_cpu(cpu: dict, n: int):
    print(f"  CPU over {cpu['wall']:.0f} s: server {cpu['server']:.1f} s ({1000 * cpu['server'] / max(n, 1):.0f} ms a "
          f"request), client process {cpu['clients']:.1f} s (includes starting it); machine load average "
          f"{cpu['load']:.1f} on {os.cpu_count()} cores")


def timed(label: str, fn):
    t0 = time.perf_counter()
    out = fn()
    print(f"  {label:<44} {time.perf_counter() - t0:6.1f} s", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the mixed phase")
    ap.add_argument("--fast-seconds", type=float, default=15.0, help="length of the fast-only phase (0: none)")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps of generate / regions_generate")
    ap.add_argument("--timeout", type=float, default=600.0, help="a request's limit (then counted as an error)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--client", choices=("queue", "gradio_client"), default="queue",
                    help="queue: browser-like sessions on one asyncio loop (bench/queue_client.py, a few ms of "
                         "client CPU a request); gradio_client: a Client per simulated user (~80 ms a request)")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch.set_num_threads in the server before it starts (0: leave torch's default)")
    ap.add_argument("--client-spec", help=argparse.SUPPRESS)  # internal: run as the client process
    a = ap.parse_args(argv)
    if a.client_spec:
        print(json.dumps(client_process(json.loads(a.client_spec))))
        return
    if not (1 <= a.clients <= 200) or not (0 < a.seconds <= 3600) or not (0 <= a.fast_seconds <= 3600):
        ap.error("--clients 1..200, --seconds 0..3600, --fast-seconds 0..3600")

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    if a.torch_threads:
        import torch

        torch.set_num_threads(a.torch_threads)
    import numpy as np
    from gradio_client import Client, handle_file
    from PIL import Image

    from app.main import APP_CSS, create_app
    from backends.generative import regions as R
    from backends.registry import Backends
    from backends.settings import Settings

    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        settings = Settings.from_env(cache_dir=str(Path(tmp) / "cache"), port=free_port())
        backends = Backends(settings)
        demo = create_app(settings, backends)
        demo.launch(server_name="127.0.0.1", server_port=settings.port, prevent_thread_lock=True, quiet=True,
                    css=APP_CSS, show_error=True)
        url = f"http://127.0.0.1:{settings.port}/"
        rss = {"launch": rss_mb()}
        try:
            canvas = Path(tmp) / "canvas.png"  # red box top left, blue box bottom right
            c = np.full((256, 256, 3), 255, np.uint8)
            c[16:116, 16:116] = R.PALETTE["red"]
            c[140:240, 140:240] = R.PALETTE["blue"]
            Image.fromarray(c).save(canvas)

            import torch

            print(f"app at {url}; {a.clients} clients ({a.client}); torch threads {torch.get_num_threads()}; warming up:", flush=True)
            cl = Client(url, verbose=False)
            timed("atlas_project digits (UMAP)", lambda: cl.predict("digits", "umap", 15, 0.1, "cosine",
                                                                      api_name="/atlas_project"))
            n_digits = len(timed("atlas_corpora + digits ids", lambda: (
                cl.predict(api_name="/atlas_corpora"),
                cl.predict("digits", "digit", False, api_name="/atlas_search"))[1]))
            timed("atlas_neighbours", lambda: cl.predict("digits", "digit-0000", 10, "cosine",
                                                         api_name="/atlas_neighbours"))
            timed(f"generate ({a.steps} steps)", lambda: cl.predict(PROMPTS[0], "", 0, a.steps, None, "",
                                                                    api_name="/generate"))
            src = timed("directions_source_prompt (10 steps)", lambda: cl.predict(
                "a red circle", 0, 10, 1.0, -1.0, api_name="/directions_source_prompt"))["source"]
            did = timed("directions_text", lambda: cl.predict("a red circle", "a blue circle",
                                                              api_name="/directions_text"))["id"]
            timed("directions_edit", lambda: cl.predict(src, [did], [1.0], 0.0, 1.0, api_name="/directions_edit"))
            timed(f"regions_generate ({a.steps} steps)", lambda: cl.predict(
                handle_file(str(canvas)), {"red": "a red circle", "blue": "a blue star"}, "", "spatext", 0, a.steps,
                api_name="/regions_generate"))
            timed("clusters_run digits k-means", lambda: cl.predict("digits", "kmeans", 10, "original", 10, "cosine",
                                                                   10, 0, api_name="/clusters_run"))
            spec = {"url": url, "client": a.client, "clients": a.clients, "timeout": a.timeout, "steps": a.steps, "seed": a.seed,
                    "n_digits": n_digits, "source": src, "direction": did, "canvas": str(canvas)}
            rss["load start"] = rss_mb()
            tables = {}
            if a.fast_seconds:
                print(f"fast-only phase, {a.fast_seconds:g} s ...", flush=True)
                out = run_phase({**spec, "seconds": a.fast_seconds, "weights": {k: MIX[k] for k in FAST}})
                tables["fast"] = summarise(out["samples"])
                print_table(f"fast only ({a.clients} clients, {a.fast_seconds:g} s)", tables["fast"], a.fast_seconds)
                print_cpu(out["cpu"], len(out["samples"]))
                rss["after fast phase"] = rss_mb()
            print(f"\nmixed phase, {a.seconds:g} s ...", flush=True)
            t0 = time.perf_counter()
            out = run_phase({**spec, "seconds": a.seconds, "weights": MIX, "seed": a.seed + 1})
            drained = time.perf_counter() - t0
            tables["mix"] = summarise(out["samples"])
            print_table(f"mixed ({a.clients} clients, {a.seconds:g} s of sending; all answered after {drained:.0f} s)",
                        tables["mix"], a.seconds)
            print_cpu(out["cpu"], len(out["samples"]))
            if out["stuck"]:
                print(f"  {out['stuck']} client threads still waiting at the end")
            rss["end"] = rss_mb()
        finally:
            demo.close()

    print("\nRSS of the server process: " + ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items()))
    if "fast" in tables:
        print("fast endpoints, p95 under the mix / p95 fast only:")
        for name in FAST:
            f, m = tables["fast"].get(name), tables["mix"].get(name)
            if f and m:
                print(f"  {name:<18} {m['p95']:.3f} / {f['p95']:.3f} s = {m['p95'] / f['p95']:.1f}x")
    worst = max((tables["mix"][n]["p95"] for n in ("atlas_neighbours", "atlas_search") if n in tables["mix"]),
                default=float("nan"))
    errors = sum(r["errors"] for t in tables.values() for r in t.values())
    print(f"neighbours/search p95 under the mix: {worst:.3f} s (target <= 1 s); errors in all: {errors}")


if __name__ == "__main__":
    main()
