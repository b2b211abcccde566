"""launch.py as a user runs it: --help stays light; --data corpora load; a bad --data file is reported."""
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np

from conftest import ROOT, free_port


def test_help_imports_no_heavy_modules():
    code = ("import sys, runpy; sys.argv = ['launch.py', '--help']\n"
            "try:\n    runpy.run_path('launch.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'gradio', 'faiss', 'umap', 'numpy') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "--data PATH" in out and "--device" in out and "--cache-dir" in out
    assert "HEAVY []" in out


def test_launch_with_data_files_and_port_from_environment(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "good.npy", rng.normal(size=(30, 4)).astype(np.float32))
    np.save(tmp_path / "bad.npy", np.full((5, 3), np.nan))
    port = free_port()
    env = dict(os.environ, PORT=str(port), LATENT_ATLAS_CACHE=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "launch.py", "--data", str(tmp_path / "good.npy"),
                             "--data", str(tmp_path / "bad.npy")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:
                time.sleep(0.5)
        else:
            raise AssertionError("the app did not answer on $PORT")
        from gradio_client import Client

        corpora = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(api_name="/atlas_corpora")
        assert any(c.startswith("upload:good") for c in corpora)
        assert not any("bad" in c for c in corpora)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "could not load --data" in out and "NaN" in out


def test_out_of_range_flags_stop_with_one_line(tmp_path):
    env = dict(os.environ, LATENT_ATLAS_CACHE=str(tmp_path / "cache"))
    for flags, name in ((["--port", "99999"], "port"), (["--max-upload-mb", "-5"], "max_upload_mb")):
        r = subprocess.run([sys.executable, "launch.py", *flags], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=60, check=False)
        assert r.returncode != 0
        assert f"launch.py: {name} must be between" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_launched_app_gives_screen_reader_keys_their_words():
    """launch.py and `latent-atlas` launch with the texts the browser test checks (conftest's app has them too)."""
    from app.main import launch_kwargs
    from backends.settings import Settings

    i18n = launch_kwargs(Settings.from_env())["i18n"]
    assert i18n.translations_dict["en"]["common.complete"] == "Complete"
