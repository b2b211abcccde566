"""What the Stitching tab does: compare two latent spaces through relative representations, and stitch
models zero-shot.

``StitchingService`` takes small values and returns values; app/tabs/stitching.py lays it out and
wires it to Gradio (and registers the named API endpoints). The settings of a comparison travel as a
small dict ("params": space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm); the
pair of spaces, the anchors and the trained heads live in the service's caches.

A space is a name from the registry in backends/representations/stitching.py (the Shapes encoders, MiniLM on the
captions, OpenCLIP when configured, digits through random networks, synthetic blobs), or
"corpus:<key>" for any corpus the Atlas knows (two uploads of the same items by two models).
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from backends.cache import content_key
from backends.errors import InputError
from backends.registry import Backends
from backends.representations import relative as rel
from backends.representations import stitching as st

CORPUS_PREFIX = "corpus:"
KINDS = ("relative", "absolute", "procrustes")
MAX_DEMO_CHOICES = 60
# the columns of the two tables (their handlers' frames below); the tables start empty with them
METRICS_COLUMNS = ("metric", "absolute", "relative", "procrustes")
TABLE_COLUMNS = ("encoder → head", "stitched", "absolute", "relative", "procrustes")
NA_DIMENSIONS = "n/a: different dimensions"  # a cross-space metric of two spaces of different widths
DEFAULTS = {"n_anchors": 300, "strategy": "random", "label": "", "seed": 0, "mode": "cosine",
            "output_norm": "none", "k": 10}


class _LRU:
    def __init__(self, size: int):
        self._d: OrderedDict = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get_or_make(self, key, make):
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        value = make()
        with self._lock:
            self._d[key] = value
            while len(self._d) > self._size:
                self._d.popitem(last=False)
        return value


class StitchingService:
    """What the Stitching tab (and its API) does, independent of the layout."""

    def __init__(self, backends: Backends):
        self.b = backends
        self._pairs = _LRU(8)
        self._setups = _LRU(8)
        self._make_lock = threading.Lock()  # one training at a time; the others wait and reuse it

    # -- spaces and pairs --------------------------------------------------------------
    def spaces(self) -> list[dict]:
        """Registered spaces (with why one is unavailable) and the Atlas corpora as "corpus:<key>"."""
        out = st.available_spaces()
        for key in self.b.user_corpus_keys() + ["digits"]:
            out.append({"name": CORPUS_PREFIX + key, "world": CORPUS_PREFIX + key,
                        "description": f"the vectors of corpus {key}", "unavailable": None})
        return out

    def usable_space_names(self) -> list[str]:
        return [s["name"] for s in self.spaces() if not s["unavailable"]]

    def default_pair(self) -> tuple[str, str]:
        usable = set(self.usable_space_names())
        for a, b in (("shapes-cnn", "shapes-vit"), ("digits-map-a", "digits-map-b"), ("blobs", "blobs-rotated")):
            if a in usable and b in usable:
                return a, b
        return "blobs", "blobs-rotated"

    def pair(self, space_a: str, space_b: str) -> st.Pair:
        if not space_a or not space_b:
            raise InputError(f"choose two spaces, but space A is {space_a!r} and space B is {space_b!r}")
        return self._pairs.get_or_make((space_a, space_b), lambda: self._load_pair(space_a, space_b))

    def _load_pair(self, space_a: str, space_b: str) -> st.Pair:
        a_corpus, b_corpus = space_a.startswith(CORPUS_PREFIX), space_b.startswith(CORPUS_PREFIX)
        if not a_corpus and not b_corpus:
            return st.load_pair(space_a, space_b, cache=self.b.cache)
        xa, meta, images = self._vectors(space_a)
        xb, _, _ = self._vectors(space_b)
        return st.pair_from_arrays(xa, xb, meta, name_a=space_a, name_b=space_b, images=images)

    def _vectors(self, space: str):
        if space.startswith(CORPUS_PREFIX):
            c = self.b.corpus(space[len(CORPUS_PREFIX):])
            return c.vectors, c.meta, c.images
        s = st.get_space(space)
        world = st.get_world(s.world)
        return st.space_vectors(space, self.b.cache), world.meta, world.images

    def params(self, space_a: str, space_b: str, **kw) -> dict:
        p = {"space_a": space_a, "space_b": space_b, **DEFAULTS}
        p.update({k: v for k, v in kw.items() if v is not None})
        try:
            p["n_anchors"], p["seed"], p["k"] = int(p["n_anchors"]), int(p["seed"]), int(p["k"])
        except (TypeError, ValueError):
            raise InputError(f"n_anchors, seed and k must be whole numbers, but are "
                             f"{p['n_anchors']!r}, {p['seed']!r}, {p['k']!r}") from None
        if p["strategy"] not in rel.ANCHOR_STRATEGIES:
            raise InputError(f"Unknown anchor strategy: {p['strategy']!r}. Must be one of: {', '.join(rel.ANCHOR_STRATEGIES)}")
        if p["mode"] not in rel.PROJECTIONS:
            raise InputError(f"Unknown relative projection: {p['mode']!r}. Must be one of: {', '.join(rel.PROJECTIONS)}")
        if p["output_norm"] not in rel.OUTPUT_NORMS:
            raise InputError(f"Unknown output normalisation: {p['output_norm']!r}. Must be one of: {', '.join(rel.OUTPUT_NORMS)}")
        return p

    def label(self, pair: st.Pair, label: str | None) -> str:
        if label:
            pair.label_values(label)  # raises a clear message when absent
            return label
        if not pair.labels:
            raise InputError("these items have no label column to classify by")
        return pair.labels[0]

    def anchors(self, p: dict) -> np.ndarray:
        """Anchor row indices: p["anchor_ids"] when given (ids of the items), else chosen by strategy."""
        pair = self.pair(p["space_a"], p["space_b"])
        if p.get("anchor_ids"):
            return rel.anchor_indices_from_ids(p["anchor_ids"], pair.ids())
        label = self.label(pair, p.get("label")) if p["strategy"] == "stratified" else None
        return st.pair_anchors(pair, p["n_anchors"], strategy=p["strategy"], label=label, seed=p["seed"])

    # -- actions -----------------------------------------------------------------------
    def compare(self, p: dict) -> dict:
        """Absolute vs relative (vs Procrustes) similarity of the two spaces over all items."""
        pair = self.pair(p["space_a"], p["space_b"])
        idx = self.anchors(p)
        out = rel.compare(pair.x_a, pair.x_b, idx, k=p["k"], mode=p["mode"], output_norm=p["output_norm"])
        out = {k: {m: _num(v) for m, v in d.items()} for k, d in out.items()}
        out.update(n_items=len(pair), n_anchors=int(len(idx)), dims=[int(pair.x_a.shape[1]), int(pair.x_b.shape[1])],
                   anchor_ids=[pair.ids()[i] for i in idx[:2000]])
        return out

    def coordinates(self, p: dict, representation: str = "relative", method: str = "pca") -> tuple[np.ndarray, np.ndarray]:
        from backends.corpora.projection import ProjectionParams, project

        if representation not in ("absolute", "relative"):
            raise InputError(f"representation must be absolute or relative, but is {representation!r}")
        pair = self.pair(p["space_a"], p["space_b"])
        if representation == "relative":
            xa, xb = st.relative_pair(pair, self.anchors(p), mode=p["mode"], output_norm=p["output_norm"])
        else:
            xa, xb = pair.x_a, pair.x_b
        if representation == "relative" and method == "pca":
            return shared_pca(xa, xb)  # relative spaces share coordinates (the anchors): one basis for both
        params = ProjectionParams(method=method, metric="cosine")
        return tuple(project(x, params, cache=self.b.cache, exact_below=self.b.settings.exact_index_below)
                     for x in (xa, xb))

    def setup(self, p: dict) -> st.StitchingSetup:
        pair = self.pair(p["space_a"], p["space_b"])
        label = self.label(pair, p.get("label"))
        idx = self.anchors(p)
        key = content_key(p["space_a"], p["space_b"], label, p["mode"], p["output_norm"], idx)

        def make():
            with self._make_lock:
                return st.prepare(pair, idx, label, mode=p["mode"], output_norm=p["output_norm"], cache=self.b.cache)

        return self._setups.get_or_make(key, make)

    def table(self, p: dict, decoders: bool = False) -> dict:
        """The stitching table (test accuracy) and the chance level; with decoders, the pixel MSE of
        each item's image rendered by the decoder trained on a relative space (A→A, B→B, A→B, B→A)."""
        s = self.setup(p)
        rows = [{k: (_num(v) if isinstance(v, float) else v) for k, v in r.items()} for r in st.stitching_table(s)]
        out = {"label": s.label, "chance": _num(st.chance_accuracy(s.pair, s.label)), "rows": rows,
               "n_train": int(len(s.pair.train)), "n_test": int(len(s.pair.test)), "n_anchors": int(len(s.anchors))}
        if decoders:
            if s.pair.images is None:
                raise InputError(f"the items of {s.pair.name_a} / {s.pair.name_b} have no images to decode")
            with self._make_lock:
                for which in ("A", "B"):
                    st.prepare_decoder(s, which, cache=self.b.cache)
            te = s.pair.test
            mean_image = s.pair.images[s.pair.train].astype(np.float32).mean(0) / 255
            out["decoding"] = [{"encoder": f"{e} ({s.pair.name(e)})", "decoder": f"{d} ({s.pair.name(d)})",
                                "stitched": e != d, "mse": _num(st.decoding_error(s, encoder=e, decoder=d))}
                               for e, d in (("A", "A"), ("B", "B"), ("A", "B"), ("B", "A"))]
            out["mse_mean_image"] = _num(np.mean((s.pair.images[te].astype(np.float32) / 255 - mean_image) ** 2))
        return out

    def demo_items(self, p: dict) -> list[str]:
        pair = self.pair(p["space_a"], p["space_b"])
        return [pair.ids()[i] for i in pair.test[:MAX_DEMO_CHOICES]]

    def classify_item(self, p: dict, item_id: str, encoder: str = "B", head: str = "A", kind: str = "relative") -> dict:
        """Encode a corpus item with `encoder`, classify it with the head trained on `head`'s space."""
        _check_roles(encoder, head, kind)
        s = self.setup(p)
        ids = s.pair.ids()
        if str(item_id) not in ids:
            raise InputError(f"item {item_id!r} is not in these spaces' items")
        i = ids.index(str(item_id))
        probs = st.classify_vectors(s, s.pair.x(encoder)[i:i + 1], encoder=encoder, head=head, kind=kind)[0]
        out = self._result(s, probs, encoder, head, kind)
        out.update(item_id=str(item_id), true=str(s.pair.label_values(s.label)[i]),
                   split=str(s.pair.meta["split"].iat[i]))
        return out

    def classify_image(self, p: dict, image: np.ndarray, encoder: str = "B", head: str = "A",
                       kind: str = "relative") -> dict:
        """Encode a new image (uint8 H×W×3) with `encoder`'s model and classify it with `head`'s head."""
        _check_roles(encoder, head, kind)
        s = self.setup(p)
        name = s.pair.name(encoder)
        if name.startswith(CORPUS_PREFIX):
            raise InputError(f"space {name} holds precomputed vectors and cannot encode a new image")
        space = st.get_space(name)
        if space.encode_images is None:
            raise InputError(f"space {name} does not read images")
        img = _as_image(image)
        if name.startswith("digits-"):
            img = _resize(img, 8)
        x = space.encode_images(img[None])
        out = self._result(s, st.classify_vectors(s, x, encoder=encoder, head=head, kind=kind)[0], encoder, head, kind)
        return out

    def decode_item(self, p: dict, item_id: str, encoder: str = "B", decoder: str = "A") -> np.ndarray:
        """The item encoded by `encoder`, rendered by the decoder trained on `decoder`'s relative space."""
        _check_roles(encoder, decoder, "relative")
        s = self.setup(p)
        ids = s.pair.ids()
        if str(item_id) not in ids:
            raise InputError(f"item {item_id!r} is not in these spaces' items")
        with self._make_lock:
            st.prepare_decoder(s, decoder, cache=self.b.cache)
        return st.decode_stitched(s, [ids.index(str(item_id))], encoder=encoder, decoder=decoder)[0]

    def _result(self, s: st.StitchingSetup, probs: np.ndarray, encoder: str, head: str, kind: str) -> dict:
        classes = s.heads[("relative" if kind == "relative" else "absolute", head)].classes
        order = np.argsort(-probs)
        return {"prediction": classes[order[0]], "label": s.label, "encoder": s.pair.name(encoder),
                "head": s.pair.name(head), "kind": kind,
                "probabilities": {classes[j]: round(float(probs[j]), 4) for j in order}}

    # -- display helpers -----------------------------------------------------------------
    def thumb_url(self, pair: st.Pair) -> str | None:
        if pair.images is None:
            return None
        d = self.b.cache.root / "thumbs" / ("st-" + content_key(pair.images)[:24])
        done = d / ".complete"
        if not done.exists():
            with self.b.cache.lock("thumbs", d.name):
                if not done.exists():
                    from PIL import Image

                    d.mkdir(parents=True, exist_ok=True)
                    for i, img in enumerate(pair.images):
                        Image.fromarray(img).resize((64, 64), Image.NEAREST).save(d / f"{i}.png", compress_level=1)
                    done.touch()
        return f"/gradio_api/file={d}/{{i}}.png"

    def payloads(self, p: dict, representation: str, method: str, color_by: str | None,
                 selected: list[int] | None = None, highlight: list[int] | None = None) -> tuple[str, str]:
        from app.components import scatter_gl
        from app.components.scatter import scatter_payload
        from app.services.atlas import map_files_dir

        pair = self.pair(p["space_a"], p["space_b"])
        xy_a, xy_b = self.coordinates(p, representation, method)
        color = pair.meta[color_by].to_numpy() if color_by and color_by in pair.meta.columns else None
        hover = (pair.meta["id"].astype(str) + " · " + (pair.meta[color_by].astype(str) if color is not None else "")).tolist()
        thumb = self.thumb_url(pair)
        gl = scatter_gl.use_gl(len(xy_a))  # a large `corpus:` space: the Atlas's WebGL map, points as a file
        out = []
        for which, xy in (("A", xy_a), ("B", xy_b)):
            common = dict(color=color, color_name=color_by or "", hover=hover, thumb_url=thumb,
                          selected=selected or [], highlight=highlight or [],
                          title=f"{which}: {pair.name(which)} · {representation}",
                          uirevision=f"{which}:{pair.name(which)}:{representation}:{method}:{p['n_anchors']}:{p['strategy']}")
            if gl:
                out.append(scatter_gl.scatter_gl_payload(xy, files=scatter_gl.MapFiles(map_files_dir(self.b)), **common))
            else:
                out.append(scatter_payload(xy, ids=pair.ids(), **common))
        return out[0], out[1]


def shared_pca(xa: np.ndarray, xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA fitted on A, applied to A and B (same columns), both scaled by A's extent."""
    mean = xa.mean(0)
    _, _, vt = np.linalg.svd(xa - mean, full_matrices=False)
    ya, yb = (xa - mean) @ vt[:2].T, (xb - mean) @ vt[:2].T
    scale = float(np.abs(ya).max()) or 1.0
    return (ya / scale).astype(np.float32), (yb / scale).astype(np.float32)


def _check_roles(encoder: str, head: str, kind: str) -> None:
    if encoder not in ("A", "B") or head not in ("A", "B"):
        raise InputError(f"encoder and head must each be 'A' or 'B', but are {encoder!r} and {head!r}")
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, but is {kind!r}")


def _as_image(image) -> np.ndarray:
    if image is None:
        raise InputError("image: nothing was given; upload an image or pick a sample")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise InputError(f"image must be H×W×3 (RGB), but has shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def _resize(img: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((side, side), Image.BOX))


def _num(v):
    v = float(v)
    return None if not np.isfinite(v) else round(v, 4)


def read_image_file(path: str) -> np.ndarray:
    """An image file as RGB uint8, at most 512 pixels on a side."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.thumbnail((512, 512))
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"image: could not read the file as an image ({exc})") from None


def metrics_frame(out: dict):
    """compare()'s metrics as the table the tab shows (METRICS_COLUMNS). A metric that could not be
    computed says why instead of leaving its cell blank: Jaccard, MRR and cosine compare an item's A
    vector with B's vectors, which needs the two spaces to have the same number of dimensions."""
    import pandas as pd

    names = {"jaccard": "Jaccard@k (cross-space)", "mrr": "MRR", "cosine": "mean cosine", "cka": "linear CKA",
             "knn_overlap": "kNN overlap (within each space)"}
    dims = out.get("dims") or []
    missing = NA_DIMENSIONS if len(dims) == 2 and dims[0] != dims[1] else "n/a"

    def cell(v):
        return missing if v is None else v

    return pd.DataFrame([{"metric": names[m], **{kind: cell(out[kind][m]) for kind in ("absolute", "relative", "procrustes")}}
                         for m in rel.METRIC_NAMES], columns=list(METRICS_COLUMNS))


def pending_maps(space_a: str, space_b: str, representation: str = "relative") -> tuple[str, str]:
    """Two empty maps titled with the pair being loaded, shown while it is computed (so the previous
    pair's maps do not stay on screen under the new names)."""
    from app.components.scatter import scatter_payload

    empty = np.zeros((0, 2), np.float32)
    return tuple(scatter_payload(empty, ids=[], title=f"{which}: {name} · {representation} · computing…",
                                 uirevision=f"pending:{which}:{name}")
                 for which, name in (("A", space_a), ("B", space_b)))


def table_frame(t: dict):
    """table()'s rows as the table the tab shows (TABLE_COLUMNS)."""
    import pandas as pd

    return pd.DataFrame([{"encoder → head": f"{r['encoder']} → {r['head']}", "stitched": "yes" if r["stitched"] else "",
                          "absolute": r["absolute"], "relative": r["relative"], "procrustes": r["procrustes"]}
                         for r in t["rows"]], columns=list(TABLE_COLUMNS))
