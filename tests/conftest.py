import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    """One cache dir for the whole run, so UMAP results and numba code are reused across tests."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def atlas_app(session_cache):
    """The whole app launched in-process on a free port; yields (url, backends)."""
    from app.main import APP_CSS, app_i18n, create_app
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(session_cache), port=free_port(), max_upload_mb=1)
    backends = Backends(settings)
    demo = create_app(settings, backends)
    demo.launch(server_name="127.0.0.1", server_port=settings.port, prevent_thread_lock=True,
                max_file_size=settings.max_upload_bytes, quiet=True, css=APP_CSS, i18n=app_i18n())
    yield f"http://127.0.0.1:{settings.port}/", backends
    demo.close()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def write_pickled_npy(path, array) -> None:
    """Write an object-dtype .npy the way numpy does (a pickle after the header): the malicious
    kind of file the loaders must refuse. Only written here, never loaded."""
    import pickle

    import numpy as np

    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": array.shape})
        pickle.dump(array, fh, protocol=3)
