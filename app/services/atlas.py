"""What the Atlas tab does: a 2-D map of any corpus, with neighbours, search, selection and export.

The map is Plotly's (app/components/scatter.py) up to scatter_gl.GL_THRESHOLD items (100,000), where
the browser tests drive its hover images, legend and selection boxes and its JSON (≤ 6 MB) is drawn 3.5–4.7 s
after page load; larger corpora get the regl-scatterplot map (app/components/scatter_gl.py): the points go to the
page as a binary file of ≤ 10 bytes a point instead of ~60 bytes of JSON, where Plotly's payload and its
SVG lasso stall. Both maps take the same `payload`/`patch` values from here and send the same events.

``AtlasService`` takes small keys and returns values; app/tabs/atlas.py lays it out and wires it
to Gradio. A view is a small dict: {"corpus": key, "xy": key of the coordinates in the service's
store, "axes": axis titles, "highlight": [...], "selected": [...]}.

Long actions take ``progress``: a callable ``progress(fraction, text)`` (or None).
"""
from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict

import numpy as np

from backends.cache import content_key
from backends.corpora.projection import ProjectionParams
from backends.errors import InputError
from backends.registry import Backends

K_DEFAULT = 10
MAX_DEFAULT_CLASSES = 20  # a corpus opens coloured by a column with at most this many values
# Columns every corpus has (its metadata columns follow); the tables start with these.
NEIGHBOUR_COLUMNS = ("id", "distance")
SELECTION_COLUMNS = ("id", "x", "y")
EXPORT_FORMATS = ("csv", "parquet", "jsonl")


class _XYStore:
    """Coordinates of the maps people are looking at, by key (LRU, shared by users)."""

    def __init__(self, size: int = 64):
        self._d: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def put(self, xy: np.ndarray) -> str:
        key = content_key(xy)
        with self._lock:
            self._d[key] = xy
            self._d.move_to_end(key)
            while len(self._d) > self._size:
                self._d.popitem(last=False)
        return key

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            return self._d.get(key)


class AtlasService:
    """What the Atlas tab (and its API) does, independent of the layout."""

    def __init__(self, backends: Backends):
        from app.components.scatter_gl import MapFiles

        self.b = backends
        self.xy = _XYStore()
        self.maps = MapFiles(map_files_dir(backends))  # a Gradio static path (app/main.py)

    # -- helpers ---------------------------------------------------------------------
    def _xy(self, view: dict, params: ProjectionParams | None = None) -> np.ndarray:
        xy = self.xy.get(view.get("xy", "")) if view.get("xy") else None
        if xy is None or len(xy) != len(self.b.corpus(view["corpus"])):
            xy = self.b.projection(view["corpus"], params or ProjectionParams(**view.get("params", {})))
        return xy

    def coordinates(self, view: dict) -> dict:
        """The view's map as {"ids": [...], "x": [...], "y": [...]}."""
        xy = self._xy(view)
        return {"ids": self.b.corpus(view["corpus"]).meta["id"].tolist(), "x": xy[:, 0].tolist(),
                "y": xy[:, 1].tolist()}

    def item_index(self, key: str, item_id: str) -> int:
        ids = self.b.corpus(key).meta["id"]
        hit = np.flatnonzero((ids == str(item_id)).to_numpy())
        if len(hit) == 0:
            raise InputError(f"no item with id {item_id!r} in this corpus")
        return int(hit[0])

    def corpus_info(self, key: str) -> str:
        """A Markdown line about the corpus: size, dimensions, metadata columns, the loader's notes."""
        c = self.b.corpus(key)
        notes = "".join(f"\n- {n}" for n in c.notes[:8])
        refused = "".join(f"\n- {n}" for n in self.b.start_notes() if n.startswith("--data"))
        return (f"**{c.name}**: {len(c):,} items × {c.dim} dimensions; metadata: "
                f"{', '.join(c.metadata_columns()) or '(none)'}" + (f"\n\nLoader notes:{notes}" if notes else "")
                + (f"\n\n**Not opened at the start:**{refused}" if refused else ""))

    def color_columns(self, key: str) -> list[str]:
        """What the map can be coloured by: "(none)" and the metadata columns."""
        return ["(none)"] + self.b.corpus(key).metadata_columns()

    def default_color(self, key: str, current: str | None = None) -> str:
        """The column the map is coloured by when a corpus opens: `current` if the corpus has it, else
        `label` if there is one, else the first column with 2 to MAX_DEFAULT_CLASSES values (the h-space
        corpus's first column is its 300 distinct prompts, whose legend squeezed the map to a strip),
        else "(none)"."""
        corpus = self.b.corpus(key)
        cols = corpus.metadata_columns()
        if current in cols or current == "(none)":
            return current
        if "label" in cols:
            return "label"
        for c in cols:
            if 2 <= corpus.meta[c].nunique() <= MAX_DEFAULT_CLASSES:
                return c
        return "(none)"

    def thumb_url(self, key: str) -> str | None:
        d = self.b.thumbnail_dir(key)
        return f"/gradio_api/file={d}/{{i}}.png" if d is not None else None

    def color_values(self, key: str, color_by: str | None):
        corpus = self.b.corpus(key)
        if not color_by or color_by == "(none)":
            return None
        if color_by not in corpus.meta.columns:
            raise InputError(f"cannot colour by {color_by!r}: the corpus has columns {', '.join(corpus.metadata_columns())}")
        return corpus.meta[color_by].to_numpy()

    def hover_texts(self, key: str) -> list[str]:
        corpus = self.b.corpus(key)
        cols = corpus.metadata_columns()[:4]
        base = corpus.meta["id"].astype(str)
        for c in cols:
            base = base + " · " + c + "=" + corpus.meta[c].astype(str).str.slice(0, 60)
        if corpus.texts is not None:
            base = base + "\n" + np.asarray(corpus.texts, dtype=object).astype(str)
        return base.tolist()

    def uses_gl(self, view: dict) -> bool:
        """Whether the view's map is drawn by regl-scatterplot (more than GL_THRESHOLD items) or Plotly."""
        from app.components import scatter_gl

        return scatter_gl.use_gl(len(self.b.corpus(view["corpus"])))

    def payload(self, view: dict, color_by: str | None) -> str:
        from app.components.scatter import scatter_payload

        key = view["corpus"]
        corpus = self.b.corpus(key)
        xy = self._xy(view)
        common = dict(
            color=self.color_values(key, color_by),
            color_name=color_by or "",
            thumb_url=self.thumb_url(key),
            highlight=view.get("highlight"),
            selected=view.get("selected"),
            title=f"{corpus.name} · {len(corpus):,} items · {view.get('label', '')}",
            axis_titles=tuple(view.get("axes", ("", ""))),
            uirevision=self.revision(view, color_by),
        )
        if self.uses_gl(view):
            from app.components.scatter_gl import scatter_gl_payload

            # tooltips are written once per corpus and hover columns, fetched by the page on hover
            tips_key = content_key(corpus.fingerprint, corpus.metadata_columns()[:4], corpus.texts is not None)
            return scatter_gl_payload(xy, files=self.maps, hover=lambda: self.hover_texts(key), tips_key=tips_key,
                                      **common)
        return scatter_payload(xy, ids=corpus.meta["id"].tolist(), hover=self.hover_texts(key), **common)

    @staticmethod
    def revision(view: dict, color_by: str | None) -> str:
        return f"{view['corpus']}:{view.get('xy', '')}:{color_by or ''}"

    def patch(self, view: dict, color_by: str | None) -> str:
        """Only the highlight/selection of the map already drawn (a few bytes, not the figure)."""
        if self.uses_gl(view):
            from app.components.scatter_gl import scatter_gl_patch

            return scatter_gl_patch(self.revision(view, color_by), len(self.b.corpus(view["corpus"])),
                                    highlight=view.get("highlight", []), selected=view.get("selected", []))
        from app.components.scatter import scatter_patch

        return scatter_patch(self.revision(view, color_by), highlight=view.get("highlight", []),
                             selected=view.get("selected", []))

    # -- actions ---------------------------------------------------------------------
    def project(self, key: str, method: str, n_neighbors: int, min_dist: float, metric: str,
                progress=None) -> dict:
        params = ProjectionParams(method=method, n_neighbors=int(n_neighbors), min_dist=float(min_dist), metric=metric)
        xy = self.b.projection(key, params, progress=progress)
        label = f"{method.upper()}" + (f" (n_neighbors={int(n_neighbors)}, min_dist={float(min_dist):g}, {metric})"
                                       if method == "umap" else "")
        return {"corpus": key, "xy": self.xy.put(xy), "params": params.__dict__, "axes": ["", ""],
                "label": label, "highlight": [], "selected": []}

    def map_is_ready(self, key: str, method: str, n_neighbors: int, min_dist: float, metric: str) -> bool:
        """Whether project() draws at once (PCA, or a UMAP map in the cache) rather than running UMAP
        (seconds for a small corpus on a fresh cache, minutes for a large one)."""
        from backends.corpora.projection import is_cached

        if method != "umap":
            return True
        corpus = self.b.corpus(key)
        params = ProjectionParams(method=method, n_neighbors=int(n_neighbors), min_dist=float(min_dist), metric=metric)
        return is_cached(len(corpus), params, cache=self.b.cache, fingerprint=corpus.fingerprint)

    def preview(self, key: str, progress=None) -> dict:
        """A PCA map to show while UMAP is computed (seconds even at a million rows); its label says so."""
        view = self.project(key, "pca", 15, 0.1, "cosine", progress=progress)
        return {**view, "label": "PCA for now: the UMAP map replaces it when it is computed", "preview": True}

    def neighbours(self, key: str, item_id: str, k: int = K_DEFAULT, metric: str = "cosine") -> list[dict]:
        k = int(k)
        if not 1 <= k <= 200:
            raise InputError(f"k must be between 1 and 200, but is {k}")
        corpus = self.b.corpus(key)
        item = self.item_index(key, item_id)
        dist, idx = self.b.neighbours(key, item, k, metric)
        rows = []
        for d, i in zip(dist.tolist(), idx.tolist()):
            row = {"id": corpus.meta["id"].iat[i], "index": int(i), "distance": round(float(d), 5)}
            row.update({c: _plain(corpus.meta[c].iat[i]) for c in corpus.metadata_columns()[:6]})
            rows.append(row)
        return rows

    def item_details(self, key: str, item: int, k: int = K_DEFAULT) -> dict:
        """What a click on row `item` shows: {"id", "meta": {column: value}, "text" (or None),
        "neighbours": rows as neighbours() returns them}."""
        corpus = self.b.corpus(key)
        item = int(item)
        if not 0 <= item < len(corpus):
            raise InputError(f"item has to be between 0 and {len(corpus) - 1}, but is {item}")
        item_id = corpus.meta["id"].iat[item]
        return {"id": item_id, "meta": {c: _plain(v) for c, v in corpus.meta.iloc[item].to_dict().items()},
                "text": corpus.texts[item] if corpus.texts is not None else None,
                "neighbours": self.neighbours(key, item_id, k)}

    def search(self, key: str, query: str, regex: bool = False) -> list[int]:
        from backends.corpora.explore import search_metadata

        return search_metadata(self.b.corpus(key), query, regex=bool(regex)).tolist()

    def text_search(self, key: str, text: str, k: int = 50) -> list[tuple[int, float]]:
        """Items nearest to a free-text query in the corpus's own space (needs an aligned text encoder)."""
        corpus = self.b.corpus(key)
        if corpus.text_query is None:
            raise InputError(f"corpus {corpus.name!r} has no aligned text encoder; use the metadata search instead")
        k = int(k)
        if not 1 <= k <= 1000:
            raise InputError(f"k must be between 1 and 1000, but is {k}")
        q = corpus.text_query(text)
        dist, idx = self.b.index(key, "cosine").search(q[None, :], k)
        return [(int(i), float(d)) for d, i in zip(dist[0], idx[0]) if i >= 0]

    def more_like_this(self, key: str, item_id: str, k: int = 50, metric: str = "cosine") -> list[int]:
        item = self.item_index(key, item_id)
        _, idx = self.b.neighbours(key, item, int(k), metric)
        return [item] + idx.tolist()

    def custom_axes(self, key: str, x_a: str, x_b: str, y_a: str, y_b: str) -> dict:
        from backends.corpora.explore import custom_axes

        xy, titles = custom_axes(self.b.corpus(key), x_a, x_b, y_a, y_b)
        return {"corpus": key, "xy": self.xy.put(xy), "axes": list(titles), "label": "custom axes",
                "highlight": [], "selected": []}

    def rows(self, view: dict, indices: list[int]):
        import pandas as pd

        corpus = self.b.corpus(view["corpus"])
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(corpus)):
            raise InputError(f"selection has indices outside 0..{len(corpus) - 1}")
        xy = self._xy(view)
        df = corpus.meta.iloc[idx].copy()
        df["x"] = np.round(xy[idx, 0].astype(np.float64), 4)  # float32 -0.086 would show as -0.0860000029206276
        df["y"] = np.round(xy[idx, 1].astype(np.float64), 4)
        return df.reset_index(drop=True) if len(idx) else pd.DataFrame(columns=list(corpus.meta.columns) + ["x", "y"])

    def export(self, view: dict, indices: list[int], fmt: str) -> str:
        from backends.corpora.loaders import export_rows

        if not indices:
            raise InputError("nothing is selected: draw a lasso or box on the map first, or search")
        out_dir = tempfile.mkdtemp(prefix="atlas-export-")
        return export_rows(self.b.corpus(view["corpus"]), indices, self._xy(view), fmt, out_dir)


def map_files_dir(backends: Backends):
    """Where the GL maps' files go (under the cache); app/main.py makes it a Gradio static path."""
    return backends.cache.root / "maps"


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
