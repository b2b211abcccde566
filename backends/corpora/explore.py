"""Browsing operations on a corpus: metadata search, groups, custom axes. Pure numpy/pandas."""
from __future__ import annotations

import re

import numpy as np

from backends.corpora.corpus import Corpus
from backends.corpora.index import normalize_rows
from backends.errors import InputError

MAX_QUERY_CHARS = 500


def search_metadata(corpus: Corpus, query: str, *, regex: bool = False, column: str | None = None) -> np.ndarray:
    """Indices of items whose metadata (or text) matches `query` (case-insensitive).

    `column=None` searches every metadata column and the item texts. A query "col=value" matches
    one column exactly (e.g. "label=3").
    """
    query = (query or "").strip()
    if not query:
        raise InputError("search query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise InputError(f"search query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
    meta = corpus.meta
    m = re.fullmatch(r"\s*([\w .-]+?)\s*=\s*(.+?)\s*", query) if not regex and column is None else None
    if m and m.group(1) in meta.columns:
        col = meta[m.group(1)].astype(str).str.lower()
        return np.flatnonzero((col == m.group(2).lower()).to_numpy())
    if regex:
        try:
            pattern = re.compile(query, re.IGNORECASE)
        except re.error as exc:
            raise InputError(f"search query {query!r} is not a valid regular expression: {exc}") from None
    if column is not None and column not in meta.columns:
        raise InputError(f"unknown metadata column {column!r}; columns are: {', '.join(meta.columns)}")
    columns = [column] if column else list(meta.columns)
    hit = np.zeros(len(corpus), bool)
    for col in columns:
        values = meta[col].astype(str)
        if regex:
            hit |= values.str.contains(pattern, regex=True, na=False).to_numpy()
        else:
            hit |= values.str.lower().str.contains(query.lower(), regex=False, na=False).to_numpy()
    if corpus.texts is not None and column is None:
        texts = np.asarray(corpus.texts, dtype=object)
        if regex:
            hit |= np.array([bool(pattern.search(t or "")) for t in texts])
        else:
            q = query.lower()
            hit |= np.array([q in (t or "").lower() for t in texts])
    return np.flatnonzero(hit)


def resolve_group(corpus: Corpus, spec: str, *, what: str = "group") -> np.ndarray:
    """Items named by `spec`: ids separated by commas ("digit-0001, digit-0002") or a metadata search."""
    spec = (spec or "").strip()
    if not spec:
        raise InputError(f"{what} is empty: give item ids or a search such as label=3")
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    id_index = {v: i for i, v in enumerate(corpus.meta["id"].tolist())}
    if all(i in id_index for i in ids):
        return np.array([id_index[i] for i in ids], dtype=np.int64)
    hits = search_metadata(corpus, spec)
    if len(hits) == 0:
        raise InputError(f"{what} {spec!r} matches no item id or metadata")
    return hits


def custom_axes(corpus: Corpus, x_a: str, x_b: str = "", y_a: str = "", y_b: str = "") -> tuple[np.ndarray, tuple[str, str]]:
    """Embedding-Projector-style axes: x = cos(item, mean A) − cos(item, mean B), y likewise.

    B may be empty (then the axis is the similarity to A alone). With no y groups, y is the first
    principal component of what the x axis does not explain.
    """
    v = normalize_rows(corpus.vectors)

    def axis(a: str, b: str, name: str) -> np.ndarray:
        ca = normalize_rows(v[resolve_group(corpus, a, what=f"{name} A")].mean(0, keepdims=True))[0]
        s = v @ ca
        if b.strip():
            cb = normalize_rows(v[resolve_group(corpus, b, what=f"{name} B")].mean(0, keepdims=True))[0]
            s = s - v @ cb
        return s

    x = axis(x_a, x_b, "x axis")
    if y_a.strip():
        y = axis(y_a, y_b, "y axis")
        y_title = f"{y_a} − {y_b}" if y_b.strip() else y_a
    else:
        direction = v.T @ (x - x.mean())
        direction /= max(np.linalg.norm(direction), 1e-12)
        resid = v - np.outer(v @ direction, direction)
        resid -= resid.mean(0)
        _, _, vt = np.linalg.svd(resid[: min(len(resid), 20_000)], full_matrices=False)
        y = resid @ vt[0]
        y_title = "first principal component of the rest"
    x_title = f"{x_a} − {x_b}" if x_b.strip() else x_a
    return np.stack([x, y], 1).astype(np.float32), (x_title, y_title)
