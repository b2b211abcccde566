"""After a start, the bundled corpora are opened in the background so the first visitor does not wait."""
import time

from backends.corpora.projection import ProjectionParams
from backends.registry import Backends
from backends.settings import Settings


def test_warm_up_caches_the_default_map_and_index(tmp_path):
    b = Backends(Settings.from_env(cache_dir=str(tmp_path / "cache")))
    lines = []
    pca = ProjectionParams(method="pca")  # the same path as the default UMAP, without numba's compile time
    b.warm_up(["digits", "no-such-corpus"], log=lines.append, params=pca, spaces=False).join(timeout=300)
    assert len(lines) == 1 and lines[0].startswith("warmed digits in")
    assert ("digits", "cosine") in b._indexes
    fresh = Backends(Settings.from_env(cache_dir=str(tmp_path / "cache")))  # the next process: from disk
    t0 = time.perf_counter()
    xy = fresh.projection("digits", pca)
    assert xy.shape == (1797, 2) and time.perf_counter() - t0 < 5.0
    assert (fresh.thumbnail_dir("digits") / ".complete").exists()


def test_the_data_files_are_warmed_first_with_the_pca_preview_the_atlas_shows_while_umap_runs(tmp_path):
    import numpy as np

    from backends.corpora.projection import is_cached

    b = Backends(Settings.from_env(cache_dir=str(tmp_path / "cache")))
    np.save(tmp_path / "mine.npy", np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32))
    key = b.add_path(str(tmp_path / "mine.npy"), operator=True)
    corpus = b.corpus(key)
    pca = ProjectionParams(method="pca")
    assert not is_cached(len(corpus), pca, cache=b.cache, fingerprint=corpus.fingerprint)
    lines = []
    b.warm_up(["no-such-corpus", key], log=lines.append, params=ProjectionParams(n_neighbors=5),
              spaces=False).join(timeout=300)
    assert [x.split(" in ")[0] for x in lines] == [f"warmed {key}"]
    for params in (pca, ProjectionParams(n_neighbors=5)):
        assert is_cached(len(corpus), params, cache=b.cache, fingerprint=corpus.fingerprint), params
    order = []
    b2 = Backends(Settings.from_env(cache_dir=str(tmp_path / "cache")))
    b2.add_path(str(tmp_path / "mine.npy"), operator=True)
    b2.corpus_names = lambda: ["digits"]  # the bundled corpora, less the slow-to-build h-space one
    b2.warm_up(log=order.append, params=pca, spaces=False).join(timeout=300)
    assert order[0].startswith(f"warmed {key}") and order[1].startswith("warmed digits")  # --data first


def test_the_flag_turns_it_off():
    from app.cli import parse_args

    assert parse_args(["--no-warm-up"]).no_warm_up and not parse_args([]).no_warm_up


def test_a_refused_data_file_is_named_on_the_page(tmp_path):
    from app.services.atlas import AtlasService

    b = Backends(Settings.from_env(cache_dir=str(tmp_path / "cache")))
    b.add_note("--data big.parquet was not opened: big.parquet: 1,000,000 rows; this server maps at most 300,000")
    info = AtlasService(b).corpus_info("digits")
    assert "Not opened at the start" in info and "big.parquet" in info


def test_launch_warms_up_unless_told_not_to(monkeypatch, tmp_path):
    import app.cli as cli

    calls = []

    class App:  # the real app is built elsewhere in the suite; here only the order of start-up matters
        def launch(self, **k):
            calls.append("launch")

    monkeypatch.setattr("backends.registry.Backends.warm_up", lambda self, *a, **k: calls.append("warm"))
    monkeypatch.setattr("app.main.create_app", lambda settings, backends: App())
    cli.main(["--cache-dir", str(tmp_path / "c"), "--port", "7999", str(tmp_path / "missing.npy")])
    assert calls == ["warm", "launch"]
    calls.clear()
    cli.main(["--cache-dir", str(tmp_path / "c"), "--port", "7999", "--no-warm-up"])
    assert calls == ["launch"]
