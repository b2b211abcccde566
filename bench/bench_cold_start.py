"""Cold start: `python launch.py` to the first HTTP 200, with a warm cache (a second start).

Target (issue 2): ≤ 10 s on 2 cores. Also prints `launch.py --help` time (target < 2 s).
"""
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_until_200(cache: str, timeout: float = 300) -> float:
    port = free_port()
    env = dict(os.environ, LATENT_ATLAS_CACHE=cache, GRADIO_ANALYTICS_ENABLED="False")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "launch.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except Exception:
                time.sleep(0.1)
        raise TimeoutError("no HTTP 200")
    finally:
        proc.terminate()
        proc.wait(30)


def main():
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "launch.py", "--help"], cwd=ROOT, check=True, capture_output=True)
    t_help = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as cache:
        first = start_until_200(cache)
        warm = [start_until_200(cache) for _ in range(3)]
    print(f"launch.py --help                 {t_help:6.2f} s (target < 2 s)")
    print(f"first start, empty cache         {first:6.2f} s to HTTP 200")
    print(f"start with warm cache (median 3) {sorted(warm)[1]:6.2f} s to HTTP 200 (target <= 10 s)")


if __name__ == "__main__":
    main()
