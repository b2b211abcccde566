"""Uploaded corpora kept on disk, so they survive a page reload and a server restart.

    store = UploadStore(cache_root / "uploads")
    store.save(key, corpus, source="wine.csv")   # vectors.npy, meta.parquet, images.npy, info.json
                                                   # (an ingest's map.npy and index.faiss too)
    store.keys()                                   # newest first
    store.load(key)                                # a Corpus again (no pickles: allow_pickle=False)
    store.remove(key)

One folder per corpus, named by a hash of its key, written to a temporary folder and renamed into
place, so a crash never leaves half a corpus. The label a person sees is the file's name and the
corpus's shape: "wine.csv · 178 × 13".
"""
from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from backends.corpora.corpus import Corpus, Precomputed
from backends.errors import InputError


def corpus_label(name: str, n: int, d: int) -> str:
    return f"{name} · {n:,} × {d:,}"


class UploadStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock = threading.Lock()

    def _dir(self, key: str) -> Path:
        return self.root / hashlib.sha1(key.encode("utf-8")).hexdigest()[:20]

    def save(self, key: str, corpus: Corpus, *, source: str = "") -> None:
        d = self._dir(key)
        if (d / "info.json").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{d.name}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / "vectors.npy", corpus.vectors, allow_pickle=False)
        meta = corpus.meta.copy()
        for c in meta.columns:  # parquet needs one type per column; mixed objects become text
            if meta[c].dtype == object:
                meta[c] = meta[c].astype(str)
        meta.to_parquet(tmp / "meta.parquet", index=False)
        if corpus.images is not None:
            np.save(tmp / "images.npy", corpus.images, allow_pickle=False)
        info = {"key": key, "name": corpus.name, "n": len(corpus), "d": corpus.dim, "description": corpus.description,
                "notes": list(corpus.notes), "texts": corpus.texts is not None, "source": source,
                "saved_at": time.time()}
        if corpus.texts is not None:
            (tmp / "texts.json").write_text(json.dumps(list(corpus.texts)))
        pre = corpus.precomputed
        if pre is not None:  # an ingest's map and index (backends/corpora/ingested.py): kept with it
            info["precomputed"] = {"map_params": pre.map_params, "index_metric": pre.index_metric,
                                   "map": pre.xy is not None, "index": False}
            if pre.xy is not None:
                np.save(tmp / "map.npy", np.asarray(pre.xy, np.float32), allow_pickle=False)
            if pre.index_path and Path(pre.index_path).is_file():
                shutil.copyfile(pre.index_path, tmp / "index.faiss")  # a copy: a later ingest may rewrite OUT's file
                info["precomputed"]["index"] = True
        (tmp / "info.json").write_text(json.dumps(info))
        with self._lock:
            if d.exists():
                shutil.rmtree(tmp, ignore_errors=True)
                return
            tmp.rename(d)

    def infos(self) -> list[dict]:
        """What is stored, newest first (folders without a readable info.json are skipped)."""
        out = []
        if not self.root.exists():
            return out
        for d in self.root.iterdir():
            if d.name.startswith(".") or not (d / "info.json").exists():
                continue
            try:
                out.append(json.loads((d / "info.json").read_text()))
            except (OSError, ValueError):
                continue
        return sorted(out, key=lambda i: -float(i.get("saved_at", 0)))

    def keys(self) -> list[str]:
        return [i["key"] for i in self.infos()]

    def load(self, key: str) -> Corpus:
        import pandas as pd

        d = self._dir(key)
        if not (d / "info.json").exists():
            raise InputError(f"uploaded corpus {key!r} is not stored here; upload the file again")
        info = json.loads((d / "info.json").read_text())
        images = np.load(d / "images.npy", allow_pickle=False) if (d / "images.npy").exists() else None
        texts = json.loads((d / "texts.json").read_text()) if (d / "texts.json").exists() else None
        # memory-mapped: this copy is the app's own (written once, then renamed into place), so its pages
        # are read on use and the kernel may drop them again, rather than a second copy in memory
        vectors = np.load(d / "vectors.npy", allow_pickle=False, mmap_mode="r")
        pre = None
        if info.get("precomputed"):
            p = info["precomputed"]
            xy = np.load(d / "map.npy", allow_pickle=False) if p.get("map") and (d / "map.npy").exists() else None
            index = str(d / "index.faiss") if p.get("index") and (d / "index.faiss").exists() else None
            pre = Precomputed(xy=xy, map_params=p.get("map_params") if xy is not None else None, index_path=index,
                              index_metric=p.get("index_metric", "cosine"))
        c = Corpus(info["name"], vectors, pd.read_parquet(d / "meta.parquet"),
                   images=images, texts=texts, description=info.get("description", ""), notes=list(info.get("notes", [])),
                   precomputed=pre)
        return c

    def remove(self, key: str) -> bool:
        d = self._dir(key)
        with self._lock:
            if not d.exists():
                return False
            shutil.rmtree(d, ignore_errors=True)
            return True


__all__ = ["UploadStore", "corpus_label"]
