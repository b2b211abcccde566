"""Fast queries while large uploads are being parsed (issue #20 item 1).

    python bench/bench_upload_queries.py [--uploaders 4] [--seconds 30] [--quiet-seconds 15]

Starts the app as a user does (`launch.py`, a fresh cache, no warm-up) and, with gradio_client
threads in this process (the server is its own process):

1. quiet: one client asks `atlas_neighbours` on digits in a closed loop (the next request when the
   last is answered) for --quiet-seconds;
2. loaded: the same client for --seconds while --uploaders clients each upload 1 MB CSVs of 1,000
   numeric columns in a closed loop (every file different, so nothing comes from a cache; each
   written by its client just before it is sent, which costs the client about 0.1 s of CPU).

Prints per phase the neighbour requests, p50 and p95 (seconds from send to answer, queueing
included), the uploads done and their median time, and p95(loaded) / p95(quiet).
Target: with 4 uploads in flight, `atlas_neighbours` p95 <= 1 s.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def p(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def write_csv(path: Path, seed: int, rows: int = 100, cols: int = 1000) -> Path:
    """About 1 MB: `rows` × `cols` numbers with 8 characters each."""
    x = np.random.default_rng(seed).normal(size=(rows, cols))
    header = ",".join(f"c{j}" for j in range(cols))
    body = "\n".join(",".join(f"{v:.5f}" for v in row) for row in x)
    path.write_text(header + "\n" + body + "\n")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uploaders", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--quiet-seconds", type=float, default=15.0)
    args = ap.parse_args(argv)

    from gradio_client import Client, handle_file

    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-upq-"))
    env = dict(os.environ, LATENT_ATLAS_CACHE=str(tmp / "cache"), GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1")
    server = subprocess.Popen([sys.executable, "launch.py", "--port", str(port), "--no-warm-up"], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except Exception:
                if time.time() - t0 > 120:
                    raise TimeoutError("the app did not answer in 120 s") from None
                time.sleep(0.3)
        size = write_csv(tmp / "size.csv", 10**6).stat().st_size
        query = Client(url, verbose=False)
        query.predict("digits", "pca", 15, 0.1, "cosine", api_name="/atlas_project")  # the corpus and its index ready
        query.predict("digits", "digit-0000", 10, "cosine", api_name="/atlas_neighbours")

        def neighbours_for(seconds: float) -> list[float]:
            out, end, i = [], time.time() + seconds, 0
            while time.time() < end:
                t = time.perf_counter()
                query.predict("digits", f"digit-{i % 1797:04d}", 10, "cosine", api_name="/atlas_neighbours")
                out.append(time.perf_counter() - t)
                i += 7
            return out

        quiet = neighbours_for(args.quiet_seconds)

        stop = threading.Event()
        upload_times: list[float] = []
        errors: list[str] = []
        counter = iter(range(10**9))
        lock = threading.Lock()

        def uploader():
            c = Client(url, verbose=False)
            while not stop.is_set():
                with lock:
                    k = next(counter)
                path = write_csv(tmp / f"wide-{k}.csv", k)  # a new file each time (written by the client)
                t = time.perf_counter()
                try:
                    c.predict(handle_file(str(path)), api_name="/atlas_upload")
                    upload_times.append(time.perf_counter() - t)
                except Exception as exc:  # noqa: BLE001 - counted and shown
                    errors.append(str(exc)[:120])
                path.unlink(missing_ok=True)

        threads = [threading.Thread(target=uploader, daemon=True) for _ in range(args.uploaders)]
        for th in threads:
            th.start()
        time.sleep(1.0)  # the uploads are in flight before the timing starts
        loaded = neighbours_for(args.seconds)
        stop.set()
        for th in threads:
            th.join(timeout=120)

        print(f"{args.uploaders} uploaders of {size / 1e6:.2f} MB CSVs (100 rows × 1,000 columns), loopback")
        print(f"{'phase':<10}{'requests':>10}{'p50 s':>9}{'p95 s':>9}")
        for name, xs in (("quiet", quiet), ("loaded", loaded)):
            print(f"{name:<10}{len(xs):>10}{p(xs, 50):>9.3f}{p(xs, 95):>9.3f}")
        med = statistics.median(upload_times) if upload_times else float("nan")
        print(f"uploads done during the loaded phase: {len(upload_times)} (median {med:.2f} s each), "
              f"errors: {len(errors)}{' e.g. ' + errors[0] if errors else ''}")
        ratio = p(loaded, 95) / p(quiet, 95)
        met = "met" if p(loaded, 95) <= 1.0 else "NOT met"
        print(f"p95 loaded / quiet: {ratio:.2f}x · target p95 <= 1 s with {args.uploaders} uploads in flight: {met}")
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
