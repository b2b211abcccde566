"""What the Clusters tab does: find clusters in a corpus, see how good they are, name them, and use them.

``ClustersService`` takes small keys and returns values; app/tabs/clusters.py lays it out and wires
it to Gradio (and registers the clusters_* API endpoints). Results live in the service's store
(and on disk in the backends' cache, keyed by content hash), by run id.

Long actions take ``progress``: a callable ``progress(fraction, text)`` (or None).
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from backends.cache import content_key
from backends.errors import InputError
from backends.registry import Backends

SPACES = ("original", "pca", "umap", "map", "goal")
GALLERY_SIZE = 24
MAX_RUNS = 64
CLUSTER_COLUMNS = ("cluster", "size", "name", "majority", "purity")
# the confusion table: one row per cluster, then one column per class of the chosen metadata column
CONFUSION_COLUMNS = ("cluster",)
# few-shot labelling: per label, how many items were given and how many the propagation gave it
PROPAGATION_COLUMNS = ("label", "given", "predicted", "mean confidence")


class _RunStore:
    """Recent clustering results by run id (LRU, shared by users; the disk cache keeps them longer)."""

    def __init__(self, size: int = MAX_RUNS):
        self._d: OrderedDict[str, tuple[str, object, dict]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def put(self, run_id: str, value) -> None:
        with self._lock:
            self._d[run_id] = value
            self._d.move_to_end(run_id)
            while len(self._d) > self._size:
                self._d.popitem(last=False)

    def get(self, run_id: str):
        with self._lock:
            return self._d.get(run_id)


class ClustersService:
    """What the Clusters tab (and its API) does, independent of the layout."""

    def __init__(self, backends: Backends):
        self.b = backends
        self.runs = _RunStore()
        self._curves = _RunStore()  # k-estimation curves by their settings (all but k), for runs with k given

    # -- helpers ---------------------------------------------------------------------
    def _space_vectors(self, key: str, space: str, goal: str = "") -> tuple[np.ndarray, str, str, str]:
        """(vectors to cluster, clustering space for ClusterParams, metric override or "", fingerprint)."""
        from backends.corpora.projection import ProjectionParams

        corpus = self.b.corpus(key)
        if space not in SPACES:
            raise InputError(f"space must be one of {', '.join(SPACES)}, but is {space!r}")
        if space == "map":
            xy = self.b.projection(key, ProjectionParams())
            return xy, "original", "euclidean", content_key("map", corpus.fingerprint)
        if space == "goal":
            from backends.clusters.names import goal_factors, goal_features

            text = self.text_space(key)
            if text is None:
                raise InputError(f"space 'goal' needs a text–image space, and corpus {key!r} has none "
                                 "(only Shapes corpora with trained encoders do)")
            feats, _ = goal_features(corpus.vectors, text, goal)
            return feats, "original", "euclidean", content_key("goal", corpus.fingerprint, goal_factors(goal))
        return corpus.vectors, space, "", corpus.fingerprint

    def text_space(self, key: str):
        from backends.clusters.names import text_space_for

        corpus = self.b.corpus(key)
        enc = None  # an upload embedded by the active --encoder: name its clusters with that encoder's text tower
        if key.startswith("upload:") and hasattr(self.b, "image_encoder"):
            e = self.b.image_encoder()
            if e is not None and f"image encoder {e.name}" in (corpus.description or ""):
                enc = e
        return text_space_for(corpus, encoder=enc)

    def result(self, run_id: str):
        hit = self.runs.get(str(run_id or ""))
        if hit is None:
            raise InputError(f"run {run_id!r} is not loaded (unknown or dropped); run the clustering again")
        return hit

    # -- actions ---------------------------------------------------------------------
    def run(self, key: str, method: str = "kmeans", k: int = 0, space: str = "original", dims: int = 10,
            metric: str = "cosine", min_cluster_size: int = 10, seed: int = 0, estimator: str = "silhouette",
            k_min: int = 2, k_max: int = 15, goal: str = "", progress=None) -> tuple[str, object]:
        from backends.clusters.clustering import ClusterParams, run_clustering

        vectors, cspace, metric_override, fp = self._space_vectors(key, space, goal)
        params = ClusterParams(method=method, k=k, k_min=k_min, k_max=k_max, estimator=estimator, space=cspace,
                               dims=dims, metric=metric_override or metric, min_cluster_size=min_cluster_size,
                               seed=seed)
        res = run_clustering(vectors, params, cache=self.b.cache, fingerprint=fp, progress=progress,
                             gpu=self.b.device == "cuda")
        if space in ("map", "goal"):  # names, galleries and generation work with the corpus's own vectors
            from backends.clusters.clustering import cluster_means

            res.centroids = cluster_means(self.b.corpus(key).vectors, res.labels, res.k)
        run_id = content_key("run", key, fp, params.__dict__)[:16]
        curve_key = content_key("curve", key, fp, {**params.__dict__, "k": 0, "min_cluster_size": 0})
        if res.curve:
            self._curves.put(curve_key, res.curve)
        self.runs.put(run_id, (key, res, {"space": space, "goal": goal, "curve_key": curve_key}))
        return run_id, res

    def curve(self, run_id: str) -> dict | None:
        """The k-estimation curve of a run: its own (k estimated), or, for a run with k given, the curve
        estimated earlier with the same settings (Estimate k, or a run with k = 0), if there was one."""
        _, res, info = self.result(run_id)
        return res.curve or self._curves.get(info.get("curve_key", ""))

    def estimate_k(self, key: str, k_min: int = 2, k_max: int = 15, estimator: str = "silhouette",
                   method: str = "kmeans", space: str = "original", dims: int = 10, metric: str = "cosine",
                   goal: str = "", progress=None) -> dict:
        if method == "hdbscan":
            raise InputError("method 'hdbscan' chooses its own number of clusters; estimate k for kmeans or "
                             "agglomerative")
        _, res = self.run(key, method, 0, space, dims, metric, 10, 0, estimator, k_min, k_max, goal, progress=progress)
        return res.curve

    def summary(self, run_id: str) -> dict:
        from backends.clusters.clustering import evaluate

        key, res, info = self.result(run_id)
        corpus = self.b.corpus(key)
        return {"run": run_id, "corpus": key, "k": res.k, "method": res.params.method, "space": info["space"],
                "sizes": res.sizes.tolist(), "noise_fraction": round(res.noise_fraction, 4),
                "silhouette": _num(res.silhouette), "silhouette_space": _num(res.silhouette_space),
                "metrics": evaluate(res.labels, corpus.meta), "curve": res.curve, "notes": res.notes,
                "seconds": res.seconds}

    def names(self, run_id: str, goal: str = "") -> list[dict]:
        """Per cluster: size, names from the text space (if any), metadata majority, purity."""
        from backends.clusters.clustering import factor_columns, majority_metadata, majority_name
        from backends.clusters.names import goal_factors, name_clusters

        key, res, _ = self.result(run_id)
        corpus = self.b.corpus(key)
        cols = factor_columns(corpus.meta)
        wanted = goal_factors(goal, cols)
        maj = majority_metadata(res.labels, corpus.meta, wanted or cols)
        text = self.text_space(key)
        goal_encoder = self.b.goal_text_encoder() if hasattr(self.b, "goal_text_encoder") else None
        texts = (name_clusters(res.centroids, text, goal=goal, goal_encoder=goal_encoder)
                 if (text is not None and res.k) else None)
        sizes = res.sizes
        rows = []
        for c in range(res.k):
            name = texts[c][0][0] if texts and texts[c] else _short_name(maj[c]) or f"cluster {c}"
            purity = max((f for _, f in maj[c].values()), default=float("nan"))
            rows.append({"cluster": c, "size": int(sizes[c]), "name": name,
                         "descriptions": [t for t, _ in texts[c]] if texts else [],
                         "majority": majority_name(maj[c]), "purity": _num(purity)})
        return rows

    def confusion(self, run_id: str, column: str):
        from backends.clusters.clustering import confusion

        key, res, _ = self.result(run_id)
        corpus = self.b.corpus(key)
        if column not in corpus.meta.columns or column == "id":
            raise InputError(f"column must be a metadata column ({', '.join(corpus.metadata_columns())}), "
                             f"but is {column!r}")
        ct = confusion(res.labels, corpus.meta[column].to_numpy())
        ct.columns = [str(c) for c in ct.columns]
        return ct.reset_index()

    def members(self, run_id: str, cluster: int, n: int = GALLERY_SIZE) -> list[int]:
        """Indices of up to n members of a cluster, most typical first (nearest its mean vector)."""
        key, res, _ = self.result(run_id)
        cluster = int(cluster)
        if not (-1 <= cluster < res.k):
            raise InputError(f"cluster must be between 0 and {res.k - 1} (or -1 for noise), but is {cluster}")
        n = int(n)
        if not 1 <= n <= 500:
            raise InputError(f"n must be between 1 and 500, but is {n}")
        idx = np.flatnonzero(res.labels == cluster)
        if cluster >= 0 and len(idx):
            x = self.b.corpus(key).vectors[idx]
            order = np.argsort(((x - res.centroids[cluster]) ** 2).sum(1), kind="stable")
            idx = idx[order]
        return idx[:n].tolist()

    def attach(self, run_id: str, column: str = "cluster") -> str:
        from backends.clusters.clustering import attach_cluster_column

        key, res, _ = self.result(run_id)
        return attach_cluster_column(self.b.corpus(key), column, res.labels)

    def sample_labels(self, key: str, column: str, per_class: int = 5, seed: int = 0) -> str:
        """'id=label' lines for `per_class` random items of each class: a simulated annotator."""
        from backends.clusters.clustering import sample_labelled

        corpus = self.b.corpus(key)
        if column not in corpus.metadata_columns():
            raise InputError(f"column must be a metadata column ({', '.join(corpus.metadata_columns())}), "
                             f"but is {column!r}")
        per_class = int(per_class)
        if not 1 <= per_class <= 100:
            raise InputError(f"per_class must be between 1 and 100, but is {per_class}")
        truth = corpus.meta[column].astype(str).to_numpy()
        idx = sample_labelled(truth, per_class, seed=int(seed))
        ids = corpus.meta["id"].to_numpy()
        return "\n".join(f"{ids[i]}={truth[i]}" for i in idx)

    def propagate(self, key: str, labels: str | dict, method: str = "spreading", space: str = "original",
                  truth_column: str = "", progress=None) -> dict:
        from backends.clusters.clustering import propagate_labels, propagation_accuracy

        corpus = self.b.corpus(key)
        pairs = parse_labels(labels)
        index = {v: i for i, v in enumerate(corpus.meta["id"].tolist())}
        missing = [i for i in pairs if i not in index]
        if missing:
            raise InputError(f"labels: no item with id {missing[0]!r} in corpus {key!r}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        if space not in ("original", "pca", "umap"):
            raise InputError(f"space must be one of original, pca, umap, but is {space!r}")
        from backends.clusters.clustering import reduce

        tell = progress or (lambda fraction, text: None)
        tell(0.0, f"{space} vectors" + (" (a UMAP reduction: the first time takes a while)" if space == "umap" else ""))
        x = reduce(corpus.vectors, space, 10, cache=self.b.cache, fingerprint=corpus.fingerprint)
        tell(0.6, f"propagating {len(pairs)} labels ({method})")
        idx = np.array([index[i] for i in pairs], dtype=np.int64)
        out = propagate_labels(x, idx, list(pairs.values()), method=method,
                               metric="cosine" if space == "original" else "euclidean")
        pred = out["pred"].astype(str)
        classes, counts = np.unique(pred, return_counts=True)
        result = {"method": method, "space": space, "n_labelled": int(len(idx)), "classes": out["classes"],
                  "counts": {str(c): int(n) for c, n in zip(classes, counts)},
                  "predictions": pred.tolist(), "confidence": np.round(out["confidence"], 4).tolist(),
                  "accuracy": None}
        if truth_column:
            if truth_column not in corpus.metadata_columns():
                raise InputError(f"truth_column must be a metadata column ({', '.join(corpus.metadata_columns())})"
                                 f", but is {truth_column!r}")
            result["accuracy"] = round(propagation_accuracy(pred, corpus.meta[truth_column].to_numpy(), idx), 4)
        tell(1.0, "done")
        return result

    def more_like_this(self, run_id: str, cluster: int, n: int = 8, seed: int = 0) -> tuple[np.ndarray, str]:
        """Generate Shapes images like a cluster: prompt = its best description; keep the n nearest its mean.

        Needs the Shapes generator and a text–image space; raises InputError where they are missing.
        """
        import torch

        key, res, _ = self.result(run_id)
        n = int(n)
        if not 1 <= n <= 16:
            raise InputError(f"n must be between 1 and 16, but is {n}")
        if not 0 <= int(cluster) < res.k:
            raise InputError(f"cluster must be between 0 and {res.k - 1}, but is {cluster}")
        text = self.text_space(key)
        if text is None:
            raise InputError("more like this cluster needs a Shapes corpus with trained encoders")
        names = self.names(run_id)
        row = names[int(cluster)]
        prompt = row["descriptions"][0] if row["descriptions"] else row["name"]
        try:
            # Shapes only: the samples are ranked by the Shapes encoder of the cluster's text space
            pipe = self.b.world_pipeline()
        except FileNotFoundError as exc:
            raise InputError(f"the Shapes generator is not available: {exc}") from None
        from backends.generative.pipeline import to_uint8

        out = pipe(prompt, num_images_per_prompt=min(64, 3 * n), generator=torch.Generator().manual_seed(int(seed)))
        images = to_uint8(out.images)
        enc = self.b.world_encoder(text.name)
        emb = enc.encode_images(images)
        centre = res.centroids[int(cluster)]
        order = np.argsort(-(emb @ (centre / max(1e-12, float(np.linalg.norm(centre))))))
        return images[order[:n]], prompt

    def map_payload(self, key: str, labels, name: str, title: str) -> str:
        """The corpus on its default Atlas map, coloured by `labels` (cluster -1: "noise"); like the Atlas's,
        drawn with regl-scatterplot above scatter_gl.GL_THRESHOLD items."""
        from app.components import scatter_gl
        from app.components.scatter import scatter_payload
        from backends.corpora.projection import ProjectionParams

        corpus = self.b.corpus(key)
        xy = self.b.projection(key, ProjectionParams())
        thumbs = self.b.thumbnail_dir(key)
        labels = np.asarray(labels)
        color = np.where(labels.astype(str) == "-1", "noise", labels.astype(str)) if labels.dtype.kind in "iu" \
            else labels.astype(str)
        thumb_url = f"/gradio_api/file={thumbs}/{{i}}.png" if thumbs else None
        hover = (corpus.meta["id"].astype(str) + " · " + name + "=" + color).tolist()
        if scatter_gl.use_gl(len(corpus)):  # the Atlas's WebGL map for large corpora (points as a binary file)
            from app.services.atlas import map_files_dir

            return scatter_gl.scatter_gl_payload(xy, files=scatter_gl.MapFiles(map_files_dir(self.b)), color=color,
                                                 color_name=name, hover=hover, thumb_url=thumb_url, title=title,
                                                 uirevision=f"clusters:{key}")
        return scatter_payload(xy, ids=corpus.meta["id"].tolist(), color=color, color_name=name, hover=hover,
                               thumb_url=thumb_url, title=title, uirevision=f"clusters:{key}")


def parse_labels(labels) -> dict[str, str]:
    """{'id': 'label'} from a dict, or from text lines 'id=label' (also 'id,label' or 'id: label')."""
    if isinstance(labels, dict):
        pairs = {str(k).strip(): str(v).strip() for k, v in labels.items()}
    else:
        pairs = {}
        for n, line in enumerate(str(labels or "").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            for sep in ("=", ",", ":", "\t"):
                if sep in line:
                    a, b = line.split(sep, 1)
                    pairs[a.strip()] = b.strip()
                    break
            else:
                raise InputError(f"labels, line {n}: expected 'id=label', got {line[:80]!r}")
    pairs = {k: v for k, v in pairs.items() if k and v}
    if not pairs:
        raise InputError("labels: none given; write one 'id=label' per line (or sample some from a column)")
    return pairs


def _short_name(majority: dict) -> str:
    """'label=7', 'colour=red, shape=circle', or 'mixed (label=3)' from {column: (value, fraction)}."""
    clear = [f"{col}={val}" for col, (val, frac) in sorted(majority.items(), key=lambda kv: -kv[1][1]) if frac >= 0.6]
    if clear:
        return ", ".join(clear[:2])
    if majority:
        col, (val, _) = max(majority.items(), key=lambda kv: kv[1][1])
        return f"mixed (most {col}={val})"
    return ""


def _num(v):
    v = float(v)
    return None if v != v else round(v, 4)


def curve_note(method: str, k_given: int, k_found: int, k_min: int, k_max: int, estimated: bool) -> str:
    """What the 'Choosing k' chart says about a run: why there is no curve, or which k was given."""
    if method == "hdbscan":
        return f"HDBSCAN finds the number of clusters itself ({k_found} here): there is no k to choose."
    if k_given and not estimated:
        return (f"k = {k_given} was given, so k was not estimated. Set k to 0, or press Estimate k "
                f"(under Parameters), to score k = {k_min}…{k_max}.")
    if k_given:
        return f"k = {k_given} was given; the curve is the estimate made earlier with the same settings."
    return ""


def propagation_table(result: dict, labels):
    """propagate()'s counts as the table the tab shows (PROPAGATION_COLUMNS): per label, the items given,
    the items predicted and their mean confidence."""
    import pandas as pd

    given = pd.Series(list(parse_labels(labels).values()), dtype=str).value_counts()
    pred = pd.Series(result["predictions"], dtype=str)
    conf = pd.Series(result["confidence"], dtype=float).groupby(pred.to_numpy()).mean()
    rows = [{"label": c, "given": int(given.get(c, 0)), "predicted": int(n), "mean confidence": round(float(conf.get(c, 0)), 3)}
            for c, n in sorted(result["counts"].items(), key=lambda kv: -kv[1])]
    return pd.DataFrame(rows, columns=list(PROPAGATION_COLUMNS))


def cluster_table(rows: list[dict]):
    """names()'s rows as the table the tab shows (CLUSTER_COLUMNS)."""
    import pandas as pd

    return pd.DataFrame([{"cluster": r["cluster"], "size": r["size"], "name": r["name"],
                          "majority": r["majority"], "purity": r["purity"]} for r in rows],
                        columns=list(CLUSTER_COLUMNS))
