"""After a start, the bundled corpora are opened in the background so the first visitor does not wait."""
import time

from backends.corpora.projection import ProjectionParams
from backends.registry import Backends
from backends.settings import Settings


def test_warm_up_caches_the_default_map_and_index(tmp_path):
    b = Backends(Settings.from_env(cache_dir=str(tmp_path / "cache")))
    lines = []
    b.warm_up(["digits", "no-such-corpus"], log=lines.append).join(timeout=300)
    assert len(lines) == 1 and lines[0].startswith("warmed digits in")
    assert ("digits", "cosine") in b._indexes
    fresh = Backends(Settings.from_env(cache_dir=str(tmp_path / "cache")))  # the next process: from disk
    t0 = time.perf_counter()
    xy = fresh.projection("digits", ProjectionParams())
    assert xy.shape == (1797, 2) and time.perf_counter() - t0 < 5.0
    assert (fresh.thumbnail_dir("digits") / ".complete").exists()


def test_the_flag_turns_it_off():
    from app.cli import parse_args

    assert parse_args(["--no-warm-up"]).no_warm_up and not parse_args([]).no_warm_up
