"""Zero-shot model stitching through relative representations, and the registry of spaces to compare.

A *world* is a fixed list of items (Shapes scenes, digits, synthetic points) with labels and a
train/test split; a *space* is one model's embedding of every item of a world. Two spaces of the
same world are parallel (row i is the same item), which is what relative representations need.

    pair = load_pair("shapes-cnn", "shapes-vit")            # vectors of both, meta, split
    anchors = pair_anchors(pair, 300, strategy="kmeans")
    table = stitching_table(pair, anchors, label="shape")   # A→A, B→B, A→B, B→A × abs / rel / Procrustes

Heads follow the paper's vision head (LayerNorm → Linear → Tanh → InstanceNorm over the batch →
Linear, Adam). A head trained on A's relative space reads B's relative vectors with no training.
Trained weights are cached as safetensors in the backend cache (keyed by a hash of the inputs).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from backends.errors import InputError
from backends.representations import relative as rel

TRAIN_FRACTION = 2 / 3  # items used to train heads and to draw anchors; the rest is the test split


# ---------------------------------------------------------------------------------------
# Worlds and spaces


class _Splits:
    """Row indices of the train / test split, from a `split` column of `self.meta`."""

    @property
    def train(self) -> np.ndarray:
        return np.flatnonzero((self.meta["split"] == "train").to_numpy())

    @property
    def test(self) -> np.ndarray:
        return np.flatnonzero((self.meta["split"] == "test").to_numpy())


@dataclass
class World(_Splits):
    """Items shared by several spaces. meta: DataFrame with "id", label columns and "split"."""

    name: str
    meta: pandas.DataFrame  # noqa: F821
    labels: tuple[str, ...]
    images: np.ndarray | None = None
    description: str = ""

    def __len__(self) -> int:
        return len(self.meta)



@dataclass
class Space:
    """One model's embedding of a world's items.

    embed(world) -> float32 (N, D); encode_images(uint8 (M, H, W, 3)) -> (M, D) for new inputs
    (None when the space does not read images); unavailable() -> None when usable, else a reason;
    fingerprint() -> a string that changes when the model's weights do (with it, the embedding of
    the world is kept in the app's disk cache, so a later start does not encode it again).
    """

    name: str
    world: str
    description: str
    embed: Callable[[World], np.ndarray]
    encode_images: Callable[[np.ndarray], np.ndarray] | None = None
    unavailable: Callable[[], str | None] = lambda: None
    fingerprint: Callable[[], str] | None = None


_WORLDS: dict[str, tuple[Callable[[], World], str]] = {}
_SPACES: dict[str, Space] = {}
_WORLD_CACHE: dict[str, World] = {}
_VEC_CACHE: dict[str, np.ndarray] = {}
_LOCK = threading.RLock()


def register_world(name: str, description: str = ""):
    def deco(fn: Callable[[], World]):
        _WORLDS[name] = (fn, description)
        return fn

    return deco


def register_space(space: Space) -> Space:
    """Make a space available by name (in the Stitching tab's menus and `load_pair`)."""
    _SPACES[space.name] = space
    return space


def _plugins() -> None:
    from backends.plugins import load_builtin_plugins

    load_builtin_plugins()  # worlds and spaces of the built-in plug-ins (the Shapes world)


def available_spaces() -> list[dict]:
    """Every registered space: name, world, description, and why it cannot be used (or None)."""
    _plugins()
    out = []
    from backends.plugins import DEFAULT_WORLD

    for s in sorted(_SPACES.values(), key=lambda sp: sp.world != DEFAULT_WORLD):  # the default world first
        try:
            reason = s.unavailable()
        except Exception as exc:  # a broken optional dependency must not break the menu
            reason = f"{type(exc).__name__}: {exc}"
        out.append({"name": s.name, "world": s.world, "description": s.description, "unavailable": reason})
    return out


def get_space(name: str) -> Space:
    _plugins()
    if name not in _SPACES:
        raise InputError(f"Unknown space: {name!r}. Must be one of: {', '.join(_SPACES)}")
    return _SPACES[name]


def get_world(name: str) -> World:
    _plugins()
    with _LOCK:
        if name not in _WORLD_CACHE:
            if name not in _WORLDS:
                raise InputError(f"Unknown world: {name!r}. Must be one of: {', '.join(_WORLDS)}")
            _WORLD_CACHE[name] = _WORLDS[name][0]()
        return _WORLD_CACHE[name]


def world_fingerprint(world: World) -> str:
    """A content hash of a world's items (their metadata and images)."""
    from backends.cache import content_key

    meta = world.meta.astype(str)
    parts = [world.name, list(meta.columns), *(meta[c].to_numpy(dtype=str) for c in meta.columns)]
    if world.images is not None:
        parts.append(np.asarray(world.images))
    return content_key(*parts)


def space_vectors(name: str, cache=None) -> np.ndarray:
    """float32 (N, D) embedding of the space's world: computed once per process, and kept in `cache`
    (an ArtifactCache) across processes when the space has a fingerprint."""
    space = get_space(name)
    reason = space.unavailable()
    if reason:
        raise InputError(f"space {name!r} is not available: {reason}")
    with _LOCK:
        if name in _VEC_CACHE:
            return _VEC_CACHE[name]
        world = get_world(space.world)
        key = None
        if cache is not None and space.fingerprint is not None:
            from backends.cache import content_key

            key = content_key("space-vectors-v1", name, world_fingerprint(world), space.fingerprint())
            arrays = cache.get_arrays("space-vectors", key)
            if arrays is not None and len(arrays["x"]) == len(world.meta):
                _VEC_CACHE[name] = arrays["x"].astype(np.float32, copy=False)
                return _VEC_CACHE[name]
        x = rel.as_matrix(space.embed(world), what=f"space {name!r}")
        if key is not None:
            cache.put_arrays("space-vectors", key, {"x": x})
        _VEC_CACHE[name] = x
        return x


def _split_column(n: int, seed: int = 0) -> np.ndarray:
    perm = np.random.default_rng(seed).permutation(n)
    split = np.full(n, "test", dtype=object)
    split[perm[: int(round(n * TRAIN_FRACTION))]] = "train"
    return split


def _openclip_spec() -> str | None:
    """The encoder spec in LATENT_ATLAS_OPENCLIP (None when unset), in backends.representations.encoders form.

    Accepts the new form ("openclip:ViT-B-32/laion2b_s34b_b79k", a directory, ...) and the old
    "<model>:<pretrained tag or checkpoint>" form ("ViT-B-32:laion2b_s34b_b79k"; "ViT-B-32:" = random weights).
    """
    spec = os.environ.get("LATENT_ATLAS_OPENCLIP", "").strip()
    if not spec:
        return None
    return legacy_openclip_spec(spec)


def legacy_openclip_spec(spec: str) -> str:
    """The old form to the new: ViT-B-32:laion2b_s34b_b79k -> openclip:ViT-B-32/laion2b_s34b_b79k (and
    ViT-B-32: -> openclip:ViT-B-32/none); specs already in the new form come back unchanged."""
    from backends.representations.encoders import SHAPES_ALIASES, SHAPES_SPECS

    spec = spec.strip()
    if spec.startswith(("openclip:", "local-dir:", "hf-hub:")) or spec in (*SHAPES_SPECS, *SHAPES_ALIASES):
        return spec
    model, colon, pretrained = spec.partition(":")
    if colon and model and "/" not in model and os.sep not in model:
        return f"openclip:{model}/{pretrained.strip() or 'none'}"
    return spec


def _openclip_unavailable():
    spec = _openclip_spec()
    if spec is None:
        return ("set LATENT_ATLAS_OPENCLIP=openclip:<arch>/<pretrained tag or .safetensors file> (or a local "
                "directory) to use an OpenCLIP model")
    from backends.representations.encoders import encoder_unavailable

    reason = encoder_unavailable(spec)
    return f"LATENT_ATLAS_OPENCLIP={spec}: {reason}" if reason else None


def _openclip_encode(images: np.ndarray) -> np.ndarray:
    """The Shapes scenes through the encoder named by LATENT_ATLAS_OPENCLIP."""
    from backends.representations.encoders import get_image_encoder

    spec = _openclip_spec()
    if spec is None:
        raise InputError(f"space 'openclip' is not available: {_openclip_unavailable()}")
    _torch_threads()
    return get_image_encoder(spec).encode_images(images)


register_space(Space("openclip", "shapes", "OpenCLIP image encoder (LATENT_ATLAS_OPENCLIP=openclip:<arch>/<pretrained>)",
                     embed=lambda w: _openclip_encode(w.images), encode_images=_openclip_encode,
                     unavailable=_openclip_unavailable))


def register_encoder_space(spec: str, *, device: str = "cpu", world: str = "shapes") -> Space:
    """Make the image encoder `spec` (see backends.representations.encoders) a space of `world`'s images, named after
    the spec ("openclip:ViT-B-32/laion2b_s34b_b79k"); the app calls this for its `--encoder` choice.

    On another world the space is named "<spec>@<world>". Registering the same encoder again returns the
    registered space; a Shapes spec on the Shapes world returns its built-in space. Raises InputError for a
    malformed spec or an unknown world; a spec that cannot be loaded here is registered with its reason
    (shown in the menu) and fails with that message when used.
    """
    from backends.representations import encoders as ie

    canonical = ie.canonical_spec(spec)
    name = canonical if world == "shapes" else f"{canonical}@{world}"
    if name in _SPACES:
        return _SPACES[name]
    if world not in _WORLDS:
        raise InputError(f"Unknown world: {world!r}. Must be one of: {', '.join(_WORLDS)}")

    def encode(images):
        _torch_threads()
        return ie.get_image_encoder(canonical, device).encode_images(images)

    return register_space(Space(name, world, f"image encoder {canonical} on {device}",
                                embed=lambda w: encode(w.images), encode_images=encode,
                                unavailable=lambda: ie.encoder_unavailable(canonical)))


# -- digits through two random nonlinear maps ------------------------------------------------
@register_world("digits", "scikit-learn handwritten digits (8×8), 1,797 items")
def _digits_world() -> World:
    import pandas as pd
    from sklearn.datasets import load_digits

    d = load_digits()
    n = len(d.target)
    imgs = np.repeat((d.images / 16.0 * 255).astype(np.uint8)[..., None], 3, axis=-1)
    meta = pd.DataFrame({"id": [f"digit-{i:04d}" for i in range(n)], "label": d.target.astype(int),
                         "split": _split_column(n)})
    world = World("digits", meta, labels=("label",), images=np.ascontiguousarray(imgs),
                  description="scikit-learn digits")
    world._pixels = d.data.astype(np.float32)  # type: ignore[attr-defined]
    return world


def random_feature_map(x: np.ndarray, *, seed: int, dim: int = 96, hidden: int = 256) -> np.ndarray:
    """A fixed random two-layer network (tanh): a stand-in for "another model" of the same data."""
    rng = np.random.default_rng(seed)
    z = (x - x.mean(0)) / (x.std(0) + 1e-6)
    w1 = rng.normal(size=(z.shape[1], hidden)) / np.sqrt(z.shape[1])
    w2 = rng.normal(size=(hidden, dim)) / np.sqrt(hidden)
    return (np.tanh(z @ w1 + 0.1 * rng.normal(size=hidden)) @ w2).astype(np.float32)


def _digits_space(name: str, seed: int) -> Space:
    def encode(images):
        px = np.asarray(images, dtype=np.float32).mean(-1) / 255.0 * 16.0
        if px.shape[1:] != (8, 8):
            raise InputError(f"digit images must be 8×8, but are {px.shape[1]}×{px.shape[2]}")
        world = get_world("digits")
        # standardise with the world's statistics so new images land where the corpus does
        ref = world._pixels  # type: ignore[attr-defined]
        return random_feature_map(np.concatenate([ref, px.reshape(len(px), 64)]), seed=seed)[len(ref):]

    return Space(name, "digits", f"digits through a random tanh network (seed {seed}), 96-d",
                 embed=lambda w: random_feature_map(w._pixels, seed=seed), encode_images=encode)


register_space(_digits_space("digits-map-a", 101))
register_space(_digits_space("digits-map-b", 202))


# -- synthetic blobs and their rotated copy -------------------------------------------------
@register_world("blobs", "synthetic: 12 Gaussian clusters in 32-d, 1,500 items")
def _blobs_world() -> World:
    import pandas as pd

    rng = np.random.default_rng(7)
    n, d, c = 1500, 32, 12
    labels = rng.integers(0, c, n)
    centres = rng.normal(size=(c, d)) * 2.0
    x = centres[labels] + rng.normal(size=(n, d))
    meta = pd.DataFrame({"id": [f"blob-{i:04d}" for i in range(n)], "label": labels, "split": _split_column(n)})
    world = World("blobs", meta, labels=("label",), description="12 Gaussian clusters")
    world._x = x.astype(np.float32)  # type: ignore[attr-defined]
    return world


def rotate_rescale(x: np.ndarray, *, seed: int, scale: float = 3.0, noise: float = 0.01) -> np.ndarray:
    """x Q · scale + noise, Q a random orthogonal matrix: the same space in other coordinates."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
    return (scale * x @ q + noise * rng.normal(size=x.shape)).astype(np.float32)


register_space(Space("blobs", "blobs", "12 Gaussian clusters, 32-d", embed=lambda w: w._x))
register_space(Space("blobs-rotated", "blobs", "the same points rotated, rescaled ×3, plus small noise",
                     embed=lambda w: rotate_rescale(w._x, seed=3)))


# ---------------------------------------------------------------------------------------
# A pair of parallel spaces


@dataclass
class Pair(_Splits):
    """Two parallel spaces: row i of x_a and x_b is item i of meta."""

    name_a: str
    name_b: str
    x_a: np.ndarray
    x_b: np.ndarray
    meta: pandas.DataFrame  # noqa: F821
    labels: tuple[str, ...]
    images: np.ndarray | None = None
    world: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        rel.check_parallel(self.x_a, self.x_b, names=(f"space A ({self.name_a})", f"space B ({self.name_b})"))
        if "split" not in self.meta.columns:
            self.meta = self.meta.assign(split=_split_column(len(self.meta)))

    def __len__(self) -> int:
        return len(self.x_a)


    def x(self, which: str) -> np.ndarray:
        return {"A": self.x_a, "B": self.x_b}[which]

    def name(self, which: str) -> str:
        return {"A": self.name_a, "B": self.name_b}[which]

    def label_values(self, label: str) -> np.ndarray:
        if label not in self.meta.columns:
            raise InputError(f"label {label!r} is not a column of these items; choose one of: {', '.join(self.labels)}")
        return self.meta[label].astype(str).to_numpy()

    def ids(self) -> list[str]:
        return self.meta["id"].astype(str).tolist()


def warm_spaces(cache, log=None) -> list[str]:
    """Embed every usable space that can be kept in `cache` (those with a fingerprint), so that
    switching to it later reads the disk. Returns the names done; a space that fails is logged."""
    _plugins()
    done = []
    for name, space in list(_SPACES.items()):
        if space.fingerprint is None or space.unavailable():
            continue
        try:
            space_vectors(name, cache)
            done.append(name)
        except Exception as exc:  # noqa: BLE001 - one broken space must not stop the others
            if log:
                log(f"could not embed space {name}: {type(exc).__name__}: {exc}")
    return done


def load_pair(space_a: str, space_b: str, cache=None) -> Pair:
    """Two registered spaces of the same world (their vectors kept in `cache`, see space_vectors)."""
    sa, sb = get_space(space_a), get_space(space_b)
    if sa.world != sb.world:
        raise InputError(f"space A ({space_a}) embeds the {sa.world!r} items but space B ({space_b}) embeds the "
                         f"{sb.world!r} items; choose two spaces of the same world")
    world = get_world(sa.world)
    return Pair(space_a, space_b, space_vectors(space_a, cache), space_vectors(space_b, cache), world.meta, world.labels,
                images=world.images, world=world.name)


def pair_from_arrays(x_a, x_b, meta=None, *, name_a: str = "A", name_b: str = "B", images=None) -> Pair:
    """Two user-provided spaces (e.g. two uploaded corpora): same number of items, row i = the same item."""
    import pandas as pd

    x_a = rel.as_matrix(x_a, what=f"space A ({name_a})")
    x_b = rel.as_matrix(x_b, what=f"space B ({name_b})")
    rel.check_parallel(x_a, x_b, names=(f"space A ({name_a})", f"space B ({name_b})"))
    if meta is None:
        meta = pd.DataFrame({"id": [str(i) for i in range(len(x_a))]})
    meta = meta.reset_index(drop=True).copy()
    labels = tuple(c for c in meta.columns if c not in ("id", "split") and meta[c].nunique() <= 100)
    return Pair(name_a, name_b, x_a, x_b, meta, labels, images=images)


def pair_anchors(pair: Pair, n_anchors: int = 300, *, strategy: str = "random", label: str | None = None,
                 seed: int = 0, on: str = "A") -> np.ndarray:
    """Anchor rows drawn from the training split (chosen in space `on`; the same items serve both spaces)."""
    labels = pair.label_values(label) if strategy == "stratified" else None
    if strategy == "stratified" and label is None:
        raise InputError("strategy 'stratified' needs a label column to stratify by")
    return rel.select_anchors(pair.x(on), n_anchors, strategy=strategy, labels=labels, seed=seed,
                              candidates=pair.train)


def relative_pair(pair: Pair, anchors, *, mode: str = "cosine", output_norm: str = "none") -> tuple[np.ndarray, np.ndarray]:
    idx = rel.check_anchor_indices(anchors, len(pair))
    return (rel.relative_projection(pair.x_a, pair.x_a[idx], mode=mode, output_norm=output_norm),
            rel.relative_projection(pair.x_b, pair.x_b[idx], mode=mode, output_norm=output_norm))


# ---------------------------------------------------------------------------------------
# Heads


@dataclass
class HeadConfig:
    """Training settings. The defaults follow the paper's head training (10 epochs of Adam); a
    short training also stitches better than a long one, which fits the details of one space."""

    hidden: int = 256
    epochs: int = 10
    lr: float = 3e-4
    batch_size: int = 128
    weight_decay: float = 1e-5
    seed: int = 0


def _torch_threads():
    import torch

    if os.environ.get("LATENT_ATLAS_TORCH_THREADS"):
        torch.set_num_threads(int(os.environ["LATENT_ATLAS_TORCH_THREADS"]))


def build_head(in_dim: int, n_classes: int, hidden: int = 256):
    """The paper's vision head: LayerNorm → Linear → Tanh → InstanceNorm over the batch → Linear.

    The InstanceNorm step normalises each hidden feature over the items of the batch (relreps
    applies InstanceNorm1d to the transposed batch), so a head always sees a batch: to classify
    one item, append it to a reference batch of the same space (see `HeadModel.predict`).
    """
    import torch
    from torch import nn

    class BatchInstanceNorm(nn.Module):
        def forward(self, x):
            return (x - x.mean(0, keepdim=True)) / torch.sqrt(x.var(0, unbiased=False, keepdim=True) + 1e-5)

    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.Tanh(), BatchInstanceNorm(),
                         nn.Linear(hidden, n_classes))


class HeadModel:
    """A trained classifier head plus its class names."""

    def __init__(self, net, classes: list[str]):
        self.net = net.eval()
        self.classes = list(classes)

    def logits(self, x: np.ndarray) -> np.ndarray:
        import torch

        x = rel.as_matrix(x, what="head input")
        if x.shape[1] != self.net[0].normalized_shape[0]:
            raise InputError(f"this head reads {self.net[0].normalized_shape[0]}-d vectors but was given {x.shape[1]}-d")
        with torch.inference_mode():
            return self.net(torch.from_numpy(x)).numpy()

    def predict(self, x: np.ndarray, *, reference: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities (M, C). With `reference`, x is normalised together with that batch."""
        x = rel.as_matrix(x, what="head input")
        if reference is not None:
            z = self.logits(np.concatenate([rel.as_matrix(reference, what="reference"), x]))[len(reference):]
        else:
            if len(x) < 2:
                raise InputError("a head normalises over the batch: classify at least 2 items, or give a reference batch")
            z = self.logits(x)
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        pred = np.asarray(self.classes)[self.predict(x).argmax(1)]
        return float(np.mean(pred == np.asarray(y).astype(str)))


def train_head(x: np.ndarray, y, *, config: HeadConfig | None = None) -> HeadModel:
    """Train the head on (x, y) with Adam and cross-entropy; returns a HeadModel (seconds on a CPU)."""
    import torch

    cfg = config or HeadConfig()
    x = rel.as_matrix(x, what="training vectors")
    y = np.asarray(y).astype(str)
    if len(y) != len(x):
        raise InputError(f"{len(y)} labels for {len(x)} training vectors")
    classes, target = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise InputError(f"training labels have a single class ({classes[0]!r}); nothing to classify")
    _torch_threads()
    torch.manual_seed(cfg.seed)
    net = build_head(x.shape[1], len(classes), cfg.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    xt, yt = torch.from_numpy(x), torch.from_numpy(target.astype(np.int64))
    gen = torch.Generator().manual_seed(cfg.seed)
    bs = max(8, min(cfg.batch_size, len(x)))
    net.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x) - bs + 1, bs):  # drop the ragged last batch: batch statistics need a batch
            b = perm[s:s + bs]
            loss = torch.nn.functional.cross_entropy(net(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return HeadModel(net, classes.tolist())


def cached_head(cache, key_parts: tuple, x: np.ndarray, y, *, config: HeadConfig | None = None) -> HeadModel:
    """train_head, with weights stored as safetensors in `cache` (an ArtifactCache or None) by content hash."""
    import json

    from safetensors.torch import load_file, save_file

    from backends.cache import content_key

    cfg = config or HeadConfig()
    if cache is None:
        return train_head(x, y, config=cfg)
    key = content_key("stitching-head-v1", *key_parts, cfg.__dict__, x, np.asarray(y).astype(str))
    path = cache.path("stitching", key, ".safetensors")

    def load() -> HeadModel | None:
        if not path.exists():
            return None
        try:
            meta_classes = json.loads(path.with_suffix(".json").read_text())["classes"]
            state = load_file(str(path))
            net = build_head(state["0.weight"].shape[0], len(meta_classes), cfg.hidden)
            net.load_state_dict(state)
            return HeadModel(net, meta_classes)
        except Exception:
            return None  # a corrupt entry is retrained

    head = load()
    if head is not None:
        return head
    with cache.lock("stitching", key):
        head = load()
        if head is not None:
            return head
        head = train_head(x, y, config=cfg)
        path.with_suffix(".json").write_text(json.dumps({"classes": head.classes}))
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in head.net.state_dict().items()}, str(tmp))
        os.replace(tmp, path)
        return head


# ---------------------------------------------------------------------------------------
# The stitching table


@dataclass
class StitchingSetup:
    """Everything needed to stitch: the pair, anchors, label, and the trained heads."""

    pair: Pair
    anchors: np.ndarray
    label: str
    mode: str = "cosine"
    output_norm: str = "none"
    heads: dict = field(default_factory=dict)  # ("relative"|"absolute", "A"|"B") -> HeadModel
    rel_: dict = field(default_factory=dict)  # "A"|"B" -> (N, k) relative vectors


def prepare(pair: Pair, anchors, label: str, *, mode: str = "cosine", output_norm: str = "none",
            config: HeadConfig | None = None, cache=None) -> StitchingSetup:
    """Train (or load) the four heads: relative and absolute, on A and on B, on the training split."""
    idx = rel.check_anchor_indices(anchors, len(pair))
    y = pair.label_values(label)
    r_a, r_b = relative_pair(pair, idx, mode=mode, output_norm=output_norm)
    setup = StitchingSetup(pair, idx, label, mode, output_norm, rel_={"A": r_a, "B": r_b})
    tr = pair.train
    for which in ("A", "B"):
        tag = (pair.world, pair.name(which), label, mode, output_norm)
        setup.heads[("relative", which)] = cached_head(cache, ("relative",) + tag + (idx,),
                                                       setup.rel_[which][tr], y[tr], config=config)
        setup.heads[("absolute", which)] = cached_head(cache, ("absolute",) + tag, pair.x(which)[tr], y[tr],
                                                       config=config)
    return setup


def stitched_accuracy(setup: StitchingSetup, encoder: str, head: str, kind: str) -> float:
    """Accuracy on the test split of `encoder`'s vectors read by the head trained on `head`'s space.

    kind: "absolute" (raw vectors; NaN when the dimensions differ), "relative", or "procrustes"
    (encoder's vectors translated into the head's space by Procrustes fitted on the anchors).
    """
    pair, te = setup.pair, setup.pair.test
    y = pair.label_values(setup.label)[te]
    if kind == "relative":
        return setup.heads[("relative", head)].accuracy(setup.rel_[encoder][te], y)
    x = pair.x(encoder)
    if kind == "procrustes" and encoder != head:
        x = rel.Procrustes().fit(x[setup.anchors], pair.x(head)[setup.anchors]).transform(x)
    elif kind not in ("absolute", "procrustes"):
        raise InputError(f"Unknown stitching kind: {kind!r}. Must be one of: absolute, relative, procrustes")
    if x.shape[1] != pair.x(head).shape[1]:
        return float("nan")
    return setup.heads[("absolute", head)].accuracy(x[te], y)


def stitching_table(setup: StitchingSetup) -> list[dict]:
    """Rows A→A, B→B, A→B, B→A (encoder → head): test accuracy absolute / relative / Procrustes."""
    pair = setup.pair
    rows = []
    for enc, head in (("A", "A"), ("B", "B"), ("A", "B"), ("B", "A")):
        rows.append({
            "encoder": f"{enc} ({pair.name(enc)})",
            "head": f"{head} ({pair.name(head)})",
            "stitched": enc != head,
            "absolute": stitched_accuracy(setup, enc, head, "absolute"),
            "relative": stitched_accuracy(setup, enc, head, "relative"),
            "procrustes": stitched_accuracy(setup, enc, head, "procrustes"),
        })
    return rows


def chance_accuracy(pair: Pair, label: str) -> float:
    """Accuracy of always answering the most frequent training class, on the test split."""
    y = pair.label_values(label)
    vals, counts = np.unique(y[pair.train], return_counts=True)
    return float(np.mean(y[pair.test] == vals[counts.argmax()]))


def classify_vectors(setup: StitchingSetup, x_new: np.ndarray, *, encoder: str, head: str,
                     kind: str = "relative") -> np.ndarray:
    """Probabilities (M, C) for new vectors of `encoder`'s space, read by the head trained on `head`'s space.

    The head's batch normalisation uses the encoder's own test items as the reference batch.
    """
    pair = setup.pair
    ref_idx = pair.test
    x_enc = pair.x(encoder)
    x_new = rel.as_matrix(x_new, what="new vectors")
    if x_new.shape[1] != x_enc.shape[1]:
        raise InputError(f"new vectors have {x_new.shape[1]} dimensions but space {pair.name(encoder)} has {x_enc.shape[1]}")
    if kind == "relative":
        anchors = x_enc[setup.anchors]
        ref = setup.rel_[encoder][ref_idx]
        z = rel.relative_projection(x_new, anchors, mode=setup.mode, output_norm="none")
        if setup.output_norm != "none":
            both = rel.normalize_output(np.concatenate([rel.relative_projection(
                x_enc, anchors, mode=setup.mode), z]), setup.output_norm)
            z = both[len(x_enc):]
        return setup.heads[("relative", head)].predict(z, reference=ref)
    if kind == "procrustes" and encoder != head:
        t = rel.Procrustes().fit(x_enc[setup.anchors], pair.x(head)[setup.anchors])
        return setup.heads[("absolute", head)].predict(t.transform(x_new), reference=t.transform(x_enc[ref_idx]))
    if x_enc.shape[1] != pair.x(head).shape[1]:
        raise InputError(f"absolute stitching needs the same dimensions: {pair.name(encoder)} is {x_enc.shape[1]}-d, "
                         f"{pair.name(head)} is {pair.x(head).shape[1]}-d")
    return setup.heads[("absolute", head)].predict(x_new, reference=x_enc[ref_idx])


# ---------------------------------------------------------------------------------------
# Decoders: relative vectors -> images (the paper's stitched autoencoders, in small)


def build_decoder(in_dim: int, out_shape: tuple[int, int, int], hidden: int = 256):
    """LayerNorm → Linear → Tanh → InstanceNorm over the batch → Linear → ReLU → Linear → sigmoid pixels."""
    import torch
    from torch import nn

    head = build_head(in_dim, 2 * hidden, hidden)  # the same normalised front end as the heads
    h, w, c = out_shape

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.front = head
            self.back = nn.Sequential(nn.ReLU(), nn.Linear(2 * hidden, h * w * c))

        def forward(self, x):
            return torch.sigmoid(self.back(self.front(x))).view(len(x), h, w, c)

    return Decoder()


class DecoderModel:
    def __init__(self, net, out_shape):
        self.net = net.eval()
        self.out_shape = tuple(out_shape)

    def decode(self, x: np.ndarray, *, reference: np.ndarray | None = None) -> np.ndarray:
        """uint8 images (M, H, W, 3) for vectors x; `reference` as in HeadModel.predict."""
        import torch

        x = rel.as_matrix(x, what="decoder input")
        batch = x if reference is None else np.concatenate([rel.as_matrix(reference, what="reference"), x])
        if len(batch) < 2:
            raise InputError("a decoder normalises over the batch: decode at least 2 items, or give a reference batch")
        with torch.inference_mode():
            out = self.net(torch.from_numpy(batch)).numpy()[len(batch) - len(x):]
        return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


DECODER_CONFIG = HeadConfig(epochs=30, lr=1e-3)


def train_decoder(x: np.ndarray, images: np.ndarray, *, config: HeadConfig | None = None) -> DecoderModel:
    """Train a decoder from x (N, k) to images uint8 (N, H, W, 3) with Adam and pixel MSE."""
    import torch

    cfg = config or DECODER_CONFIG
    x = rel.as_matrix(x, what="training vectors")
    if len(images) != len(x):
        raise InputError(f"{len(images)} images for {len(x)} training vectors")
    _torch_threads()
    torch.manual_seed(cfg.seed)
    shape = tuple(images.shape[1:])
    net = build_decoder(x.shape[1], shape, cfg.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
    gen = torch.Generator().manual_seed(cfg.seed)
    bs = max(8, min(cfg.batch_size, len(x)))
    net.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x) - bs + 1, bs):
            b = perm[s:s + bs]
            loss = torch.nn.functional.mse_loss(net(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return DecoderModel(net, shape)


def cached_decoder(cache, key_parts: tuple, x: np.ndarray, images: np.ndarray, *,
                   config: HeadConfig | None = None) -> DecoderModel:
    """train_decoder, with weights stored as safetensors in `cache` by content hash."""
    from safetensors.torch import load_file, save_file

    from backends.cache import content_key

    cfg = config or DECODER_CONFIG
    if cache is None:
        return train_decoder(x, images, config=cfg)
    key = content_key("stitching-decoder-v1", *key_parts, cfg.__dict__, x, images)
    path = cache.path("stitching", key, ".safetensors")
    shape = tuple(images.shape[1:])

    def load():
        if not path.exists():
            return None
        try:
            net = build_decoder(x.shape[1], shape, cfg.hidden)
            net.load_state_dict(load_file(str(path)))
            return DecoderModel(net, shape)
        except Exception:
            return None

    model = load()
    if model is not None:
        return model
    with cache.lock("stitching", key):
        model = load()
        if model is None:
            model = train_decoder(x, images, config=cfg)
            tmp = path.with_suffix(".tmp")
            save_file({k: v.contiguous() for k, v in model.net.state_dict().items()}, str(tmp))
            os.replace(tmp, path)
        return model


def prepare_decoder(setup: StitchingSetup, which: str = "A", *, config: HeadConfig | None = None,
                    cache=None) -> DecoderModel:
    """A decoder trained on `which`'s relative space (training split) to render the items' images."""
    pair = setup.pair
    if pair.images is None:
        raise InputError(f"the items of {pair.name_a} / {pair.name_b} have no images to decode")
    key = ("decoder", pair.world, pair.name(which), setup.mode, setup.output_norm, setup.anchors)
    if ("decoder", which) not in setup.heads:
        tr = pair.train
        setup.heads[("decoder", which)] = cached_decoder(cache, key, setup.rel_[which][tr], pair.images[tr],
                                                         config=config)
    return setup.heads[("decoder", which)]


def decode_stitched(setup: StitchingSetup, rows, *, encoder: str, decoder: str) -> np.ndarray:
    """Images of items `rows` encoded by `encoder`, rendered by the decoder trained on `decoder`'s space."""
    dec = setup.heads[("decoder", decoder)]
    rows = np.asarray(rows, dtype=np.int64)
    return dec.decode(setup.rel_[encoder][rows], reference=setup.rel_[encoder][setup.pair.test])


def decoding_error(setup: StitchingSetup, *, encoder: str, decoder: str) -> float:
    """Mean squared pixel error (0..1 scale) on the test split."""
    te = setup.pair.test
    out = setup.heads[("decoder", decoder)].decode(setup.rel_[encoder][te]).astype(np.float32) / 255
    return float(np.mean((out - setup.pair.images[te].astype(np.float32) / 255) ** 2))
