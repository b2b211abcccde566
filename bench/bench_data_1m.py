"""A million points from the command line to the page (issue #21 item 4): `latent-atlas --data big.npy`
with N × D float32 vectors (clustered, 1,000,000 × 384 by default), the app in a subprocess as a user
starts it, a fresh cache, the page in headless Chromium (Playwright, 1400×1000, software WebGL).

Printed, from the launch:
- the file loaded (the app's "loaded … as" line) and the first HTTP 200;
- first paint: the Atlas map drawn in the page (regl-scatterplot above 100,000 points), which on a fresh
  cache is the PCA preview (the UMAP map replaces it when computed), and the bytes the page fetched for it;
- with --umap (default): the UMAP map in place of the preview (UMAP fitted on a 100,000-row sample,
  the other rows placed by their nearest sample rows), i.e. 2-D coordinates for all N points;
- the server process's RSS: peak and at the end, and as a multiple of the vectors' bytes.

Targets (2-core machine): first paint of 1M points ≤ 10 s after the map's coordinates exist; map payload
≤ 12 bytes a point; server RSS ≤ 6 GB at 1M × 384; 2-D coordinates for all 1M points ≤ 10 minutes.
There is no tool a user would run instead on the same machine to time against (umap-learn on all 1M rows
takes hours here): the ratios printed are against the targets and the vectors' size.

    python bench/bench_data_1m.py [--n 1000000] [--dim 384] [--no-umap] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TITLE = "() => { const e = document.querySelector('#atlas-map .la-gl-title, #atlas-map .gtitle'); " \
        "return e ? e.textContent : (document.querySelector('#atlas-map') || {}).innerText || ''; }"


def log(msg: str) -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_vectors(path: Path, n: int, dim: int, seed: int = 0) -> None:
    """n × dim float32 in 50 Gaussian clusters, written in blocks (never two copies in memory)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(50, dim)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        out[a:b] = centres[rng.integers(0, 50, b - a)] + rng.normal(size=(b - a, dim)).astype(np.float32)
    out.flush()
    del out


class RssSampler(threading.Thread):
    """The RSS of a process (and its children), every 0.25 s: peak and last, in bytes."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = self.last = 0
        self.stop = threading.Event()

    def run(self):
        import psutil

        while not self.stop.is_set():
            try:
                rss = self.proc.memory_info().rss + sum(c.memory_info().rss for c in self.proc.children(recursive=True))
            except psutil.Error:
                break
            self.last, self.peak = rss, max(self.peak, rss)
            time.sleep(0.25)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--no-umap", action="store_true", help="stop after the first paint (the PCA preview)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="the most seconds to wait for any one step")
    ap.add_argument("--json", help="write the results here too")
    a = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    res: dict = {"n": a.n, "dim": a.dim, "vectors_bytes": a.n * a.dim * 4, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-data-1m-") as tmp:
        data = Path(tmp) / "big.npy"
        t = time.perf_counter()
        write_vectors(data, a.n, a.dim)
        log(f"wrote {data.name}: {a.n:,} × {a.dim} float32, {data.stat().st_size / 2**30:.2f} GiB "
            f"in {time.perf_counter() - t:.1f} s")
        port = free_port()
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, str(ROOT / "launch.py"), "--data", str(data), "--port", str(port), "--host",
               "127.0.0.1", "--cache-dir", str(Path(tmp) / "cache"), "--no-warm-up"]
        t0 = time.perf_counter()
        server = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        rss = RssSampler(server.pid)
        rss.start()
        lines: list[str] = []
        loaded = threading.Event()

        def read():
            for line in server.stdout:
                lines.append(line.rstrip())
                if line.startswith("loaded ") or "could not load --data" in line:
                    res.setdefault("loaded_s", time.perf_counter() - t0)
                    loaded.set()

        threading.Thread(target=read, daemon=True).start()
        try:
            if not loaded.wait(a.timeout):
                raise RuntimeError("the app did not report loading the file:\n" + "\n".join(lines[-20:]))
            if not any(x.startswith("loaded ") for x in lines):
                raise RuntimeError("the app refused the file:\n" + "\n".join(lines[-20:]))
            log(f"file loaded by the app: {res['loaded_s']:.1f} s after the launch")
            url = f"http://127.0.0.1:{port}/"
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.perf_counter() - t0 > a.timeout or server.poll() is not None:
                    raise RuntimeError("no HTTP 200:\n" + "\n".join(lines[-20:]))
                time.sleep(0.2)
            res["http_200_s"] = time.perf_counter() - t0
            res["rss_at_200"] = rss.last
            log(f"HTTP 200: {res['http_200_s']:.1f} s; server RSS {rss.last / 2**30:.2f} GiB")

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                sizes: dict[str, int] = {}
                page.on("requestfinished",
                        lambda req: sizes.__setitem__(req.url, req.response().request.sizes()["responseBodySize"]))
                t1 = time.perf_counter()
                page.goto(url)
                page.wait_for_selector("#atlas-map .la-scatter[data-gl-ready], #atlas-map .la-scatter[data-ready]",
                                       state="attached", timeout=int(a.timeout * 1000))
                res["page_to_paint_s"] = time.perf_counter() - t1
                res["launch_to_paint_s"] = time.perf_counter() - t0
                res["first_title"] = page.evaluate(TITLE)
                res["gl"] = page.locator("#atlas-map .la-scatter[data-gl-ready]").count() > 0
                res["map_bytes"] = sum(v for k, v in sizes.items() if "/maps/" in k or k.endswith(".bin"))
                res["bytes_per_point"] = res["map_bytes"] / a.n
                log(f"first paint ({'regl-scatterplot' if res['gl'] else 'Plotly'}): {res['page_to_paint_s']:.1f} s "
                    f"after page.goto, {res['launch_to_paint_s']:.1f} s after the launch; title {res['first_title']!r}; "
                    f"map files {res['map_bytes'] / 2**20:.1f} MiB = {res['bytes_per_point']:.1f} bytes a point")
                if not a.no_umap and "PCA for now" in res["first_title"]:
                    page.wait_for_function(f"!({TITLE})().includes('PCA for now')", timeout=int(a.timeout * 1000),
                                           polling=1000)
                    res["umap_s"] = time.perf_counter() - t1
                    res["umap_title"] = page.evaluate(TITLE)
                    log(f"UMAP map in place: {res['umap_s']:.0f} s after page.goto; title {res['umap_title']!r}")
                browser.close()
        finally:
            res["rss_peak"], res["rss_end"] = rss.peak, rss.last
            rss.stop.set()
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        res["load_average"] = os.getloadavg()[0]

    vb = res["vectors_bytes"]
    log(f"\n{a.n:,} × {a.dim} ({vb / 2**30:.2f} GiB of vectors), {res['cpus']} cores, load average "
        f"{res['load_average']:.1f}")
    log(f"  --data → file loaded            {res['loaded_s']:8.1f} s")
    log(f"  --data → HTTP 200               {res['http_200_s']:8.1f} s")
    log(f"  page.goto → first map drawn     {res['page_to_paint_s']:8.1f} s   (target ≤ 10 s after the coordinates "
        f"exist; here the PCA preview is computed in this time too)")
    log(f"  map payload                     {res['bytes_per_point']:8.1f} bytes a point (target ≤ 12: "
        f"{res['bytes_per_point'] / 12:.2f}× the target)")
    if "umap_s" in res:
        log(f"  page.goto → UMAP map drawn      {res['umap_s']:8.0f} s   (target ≤ 600 s: {res['umap_s'] / 600:.2f}× it)")
    log(f"  server RSS peak / end           {res['rss_peak'] / 2**30:8.2f} / {res['rss_end'] / 2**30:.2f} GiB = "
        f"{res['rss_peak'] / vb:.2f}× / {res['rss_end'] / vb:.2f}× the vectors (target ≤ 6 GB: "
        f"{res['rss_peak'] / 6e9:.2f}× it)")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
