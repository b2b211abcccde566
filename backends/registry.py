"""Process-wide registries: corpora, indexes and lazily loaded models, shared by all users.

Per-user state lives in the UI as small keys (a corpus key, a projection key); the heavy objects
they name live here.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from functools import cached_property

import numpy as np

from backends.cache import ArtifactCache
from backends.corpora.corpus import Corpus, available_corpora, load_corpus
from backends.corpora.index import VectorIndex
from backends.errors import InputError
from backends.settings import Settings


class _LazyImageEmbedder:
    """The active encoder's encode_images, loaded only when an upload holds images: a .npy or CSV
    upload never imports torch (807 MB of memory against 220 MB without it)."""

    def __init__(self, backends: Backends):
        self._b = backends

    @property
    def __self__(self):  # the encoder, as a bound encode_images would give (its text tower searches)
        return self._b.image_encoder()

    @property
    def image_size(self):
        enc = self._b.image_encoder()
        return getattr(enc, "image_size", None) if enc is not None else None

    def __call__(self, images):
        enc = self._b.image_encoder()
        if enc is None:
            from backends.corpora.loaders import pixel_embedder

            return pixel_embedder(images)
        return enc.encode_images(images)


def _log():
    import logging

    return logging.getLogger("latent_atlas")


def _label(name: str, n: int, d: int) -> str:
    from backends.corpora.uploads import corpus_label

    return corpus_label(name, n, d)


class Backends:
    """Everything the UI calls into. Safe to share between threads (Gradio workers)."""

    MAX_USER_CORPORA = 16  # uploaded corpora kept in memory (least recently used dropped)

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.cache = ArtifactCache(self.settings.cache_dir)
        self._lock = threading.RLock()
        self._corpora: dict[str, Corpus] = {}
        self._user: OrderedDict[str, Corpus] = OrderedDict()
        self._indexes: dict[tuple[str, str], VectorIndex] = {}
        self._index_locks: dict[tuple[str, str], threading.Lock] = {}
        self._index_threads: dict[tuple[str, str], threading.Thread] = {}
        self._row_norms: dict[str, np.ndarray] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._notes: list[str] = []  # why a chosen model was not used (shown at start and in the tabs)
        self._gen_spec = None
        self._gen_pipe = None
        self._gen_lock = threading.Lock()
        self._enc_spec = None
        from backends.corpora.uploads import UploadStore

        self.uploads = UploadStore(self.cache.root / "uploads")  # uploads survive reloads and restarts
        self._labels: dict[str, str] = {}

    # -- corpora ----------------------------------------------------------------------
    def corpus_names(self) -> list[str]:
        return list(available_corpora())

    def corpus(self, key: str) -> Corpus:
        """A bundled corpus by name ("digits", "shapes", …) or an uploaded one by its key."""
        with self._lock:
            if key in self._corpora:
                return self._corpora[key]
            if key in self._user:
                self._user.move_to_end(key)
                return self._user[key]
            if key.startswith("upload:"):
                corpus = self.uploads.load(key)  # stored on disk by an earlier upload (or server run)
                self._user[key] = corpus
                self._user.move_to_end(key)
                self._trim_user()
                return corpus
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per name even when several users ask at once
            with self._lock:
                if key in self._corpora:
                    return self._corpora[key]
            corpus = load_corpus(key, **self._loader_kwargs(key))
            with self._lock:
                self._corpora[key] = corpus
            return corpus

    def _loader_kwargs(self, key: str) -> dict:
        """Loaders that take a `cache` keep what they compute (a generated corpus's samples) in the
        app's disk cache, so a later start reads it instead of computing it again."""
        from backends.corpora.corpus import loader_accepts

        return {"cache": self.cache} if loader_accepts(key, "cache") else {}

    def add_corpus(self, corpus: Corpus) -> str:
        """Register a user corpus; returns its key (content-addressed, so re-uploads are free)."""
        key = f"upload:{corpus.name}:{corpus.fingerprint[:12]}"
        with self._lock:
            self._user[key] = corpus
            self._user.move_to_end(key)
            self._trim_user()
        self._seed_map(corpus)
        return key

    def keep_corpus(self, corpus: Corpus, source: str) -> tuple[str, str | None]:
        """Register a corpus the app made (the failure search's) and store it with the uploads under
        the cache dir, so it is listed again after a restart and can be removed like an upload.
        source: its label in the menus. Returns (key, None), or (key, why it was not stored: a full
        disk keeps it for this run only)."""
        key = self.add_corpus(corpus)
        with self._lock:
            self._labels[key] = _label(source, len(corpus), corpus.dim)
        try:
            self.uploads.save(key, corpus, source=source)
        except OSError as exc:
            return key, f"not kept for the next start: {exc}"
        return key, None

    def _seed_map(self, corpus: Corpus) -> None:
        """An ingest's map (Corpus.precomputed) goes into the projection cache under the params it was made
        with, so the Atlas's map of those params is it (no UMAP run); other params are computed as usual."""
        from backends.corpora.projection import ProjectionParams, seed_projection

        pre = corpus.precomputed
        if pre is None or pre.xy is None:
            return
        fields = ProjectionParams.__dataclass_fields__
        params = ProjectionParams(**{k: v for k, v in (pre.map_params or {}).items() if k in fields})
        try:
            seed_projection(self.cache, corpus.fingerprint, pre.xy, params)
        except InputError as exc:  # params this app would refuse: the map is computed here instead
            _log().warning(f"{corpus.name}: the ingest's map is not used ({exc})")

    def _trim_user(self) -> None:
        """Keep at most MAX_USER_CORPORA uploads in memory (stored ones load again from disk)."""
        while len(self._user) > self.MAX_USER_CORPORA:
            old, _ = self._user.popitem(last=False)
            for ik in [k for k in self._indexes if k[0] == old]:
                del self._indexes[ik]
            self._row_norms.pop(old, None)

    def corpus_label(self, key: str) -> str:
        """What a person sees for a corpus: bundled ones by name, uploads as "wine.csv · 178 × 13"."""
        if not key.startswith("upload:"):
            return key
        with self._lock:
            if key in self._labels:
                return self._labels[key]
            c = self._user.get(key)
        if c is not None:
            label = _label(c.name, len(c), c.dim)
        else:
            info = next((i for i in self.uploads.infos() if i["key"] == key), None)
            label = _label(info.get("source") or info["name"], info["n"], info["d"]) if info else key
        with self._lock:
            self._labels[key] = label
        return label

    def corpus_choices(self) -> list[tuple[str, str]]:
        """(label, key) for every corpus a tab can open: uploads (newest first, stored ones included),
        then the bundled ones."""
        return [(self.corpus_label(k), k) for k in self.user_corpus_keys()] + [(n, n) for n in self.corpus_names()]

    def remove_upload(self, key: str) -> None:
        """Forget an uploaded corpus, in memory and on disk."""
        if not str(key).startswith("upload:"):
            raise InputError(f"only uploaded corpora can be removed, and {key!r} is a bundled one")
        with self._lock:
            found = self._user.pop(key, None) is not None
            for ik in [k for k in self._indexes if k[0] == key]:
                del self._indexes[ik]
            self._row_norms.pop(key, None)
            self._labels.pop(key, None)
        if not (self.uploads.remove(key) or found):
            raise InputError(f"no uploaded corpus {key!r}")

    # -- indexes ----------------------------------------------------------------------
    def index(self, key: str, metric: str = "cosine", *, wait: bool = True) -> VectorIndex | None:
        """The corpus's FAISS index (exact below settings.exact_index_below rows, IVF from
        settings.ivf_index_above, HNSW between), built
        once, outside the registry's lock (other users are not held up while it builds). wait=False:
        None while a large index is still building (its build is started in the background)."""
        corpus = self.corpus(key)
        ik = (key, metric)
        with self._lock:
            if ik in self._indexes:
                return self._indexes[ik]
            build_lock = self._index_locks.setdefault(ik, threading.Lock())
            if not wait and len(corpus) >= self.settings.exact_index_below:
                if ik not in self._index_threads:
                    t = threading.Thread(target=self.index, args=(key, metric), daemon=True,
                                         name=f"index-{key}-{metric}")
                    self._index_threads[ik] = t
                    t.start()
                return None
        with build_lock:
            with self._lock:
                if ik in self._indexes:
                    return self._indexes[ik]
            index = self._precomputed_index(corpus, metric) or VectorIndex(
                corpus.vectors,
                metric=metric,
                exact_below=self.settings.exact_index_below,
                ivf_above=self.settings.ivf_index_above,
                # FAISS uses a GPU when faiss-gpu is installed and sees one (asked of FAISS, not torch:
                # a vectors file never imports torch); --device cpu keeps it on the CPU
                device="cpu" if self.settings.device == "cpu" else "auto",
            )
            with self._lock:
                self._indexes[ik] = index
            return index

    @staticmethod
    def _precomputed_index(corpus: Corpus, metric: str) -> VectorIndex | None:
        """An ingest's index.faiss (Corpus.precomputed) for queries in its metric, when it holds this
        corpus's rows; None (with a log line when there was one to read) to build one instead."""
        pre = corpus.precomputed
        if pre is None or not pre.index_path or metric != pre.index_metric:
            return None
        try:
            index = VectorIndex.read(pre.index_path, rows=len(corpus), dim=corpus.dim, metric=metric,
                                     vectors=corpus.vectors)
            if index.recall_estimate is not None:
                _log().info(f"{corpus.name}: {pre.index_path}: nprobe {index.nprobe}, recall@10 "
                            f"{index.recall_estimate:.3f} on 256 sample rows")
            return index
        except (InputError, MemoryError) as exc:
            _log().warning(f"{corpus.name}: {pre.index_path} not used ({exc}); building an index instead")
            return None

    @cached_property
    def device(self) -> str:
        from backends.settings import resolve_device

        return resolve_device(self.settings.device)

    def neighbours(self, key: str, item: int, k: int = 10, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
        """k nearest neighbours of item `item` in the ORIGINAL space, excluding itself."""
        corpus = self.corpus(key)
        if not 0 <= item < len(corpus):
            raise InputError(f"item index {item} is out of range for corpus of {len(corpus)} items")
        index = self.index(key, metric, wait=False)
        if index is None:  # a large index still building: a scan of the vectors answers this one
            from backends.corpora.index import exact_neighbours

            d, i = exact_neighbours(corpus.vectors, corpus.vectors[item], k + 1, metric, norms=self._norms(key, corpus))
        else:
            d, i = index.search(corpus.vectors[item : item + 1], k + 1)
            d, i = d[0], i[0]
        keep = (i != item) & (i >= 0)
        return d[keep][:k], i[keep][:k]

    def _norms(self, key: str, corpus) -> np.ndarray:
        with self._lock:
            n = self._row_norms.get(key)
        if n is None:
            from backends.corpora.index import row_norms

            n = row_norms(corpus.vectors)
            with self._lock:
                self._row_norms[key] = n
        return n

    # -- generator ----------------------------------------------------------------------
    def model_notes(self) -> list[str]:
        """Messages about chosen models that could not be used (the app then runs on Shapes)."""
        self.generator_spec()
        self.encoder_spec()
        with self._lock:
            return list(self._notes)

    def add_note(self, message: str) -> None:
        """Something the person using the app should know from the start (shown in the Atlas and
        Generate tabs), e.g. a --data file that could not be opened."""
        with self._lock:
            self._notes.append(message)

    def start_notes(self) -> list[str]:
        with self._lock:
            return list(self._notes)

    def _fallback(self, message: str):
        from backends.generative.sd import GeneratorSpec

        with self._lock:
            self._notes.append(f"{message}; using the Shapes generator instead")
            self._gen_spec = GeneratorSpec("shapes")
            return self._gen_spec

    def generator_spec(self):
        """The generator in use: the one asked for when it is available here, else Shapes (with a note)."""
        from backends.generative.sd import ModelUnavailable, check_available

        with self._lock:
            if self._gen_spec is not None:
                return self._gen_spec
        try:
            spec = check_available(self.settings.generator, download=self.settings.download)
            if spec.kind == "diffusers" and self.settings.device == "auto" and self.device != "cuda":
                raise ModelUnavailable(f"generator {spec.label!r} needs a GPU and torch sees none; pass --device cpu "
                                       "to run it on the CPU anyway (seconds per image for sd-turbo, minutes for SD 1.5)")
        except InputError as exc:
            return self._fallback(str(exc))
        with self._lock:
            self._gen_spec = spec
        return spec

    @property
    def generator_label(self) -> str:
        return self.generator_spec().label

    def generator_pipeline(self):
        """The active text-to-image pipeline (a LatentDiffusionPipeline), loaded on first use."""
        from backends.plugins import get_generator

        spec = self.generator_spec()
        if spec.kind == "shapes":
            return get_generator("shapes").load_pipeline(device=self.device)
        with self._gen_lock:
            if self._gen_pipe is None:
                from backends.generative.sd import load_diffusers_pipeline

                s = self.settings
                try:
                    self._gen_pipe = load_diffusers_pipeline(spec, device=self.device, download=s.download,
                                                             offload=s.cpu_offload, attention_slicing=s.attention_slicing)
                except InputError as exc:
                    self._fallback(str(exc))
                    return get_generator("shapes").load_pipeline(device=self.device)
            return self._gen_pipe

    def generator_defaults(self) -> dict:
        """What the active generator is meant to be sampled with (no weights loaded): steps,
        guidance_scale, region_guidance_scale, guidance_methods (default first), and the guidance
        halves the Directions tab starts with (a plug-in's own; Haas et al.'s uncond / both otherwise)."""
        from backends.generative.sd import guidance_methods, sampling_defaults
        from backends.plugins import get_generator

        spec = self.generator_spec()
        if spec.kind == "shapes":
            return dict(get_generator("shapes").defaults())
        steps, g = sampling_defaults(spec)
        return {"steps": steps, "guidance_scale": g, "region_guidance_scale": g,
                "guidance_methods": guidance_methods(spec), "directions_record_half": "uncond",
                "directions_delta_half": "both", "region_methods": {},
                "supervised_directions": {}}

    def region_planner(self, model: str | None = None):
        """The object planner of the Regions model `model` (default: the active generator's world), or
        None: the Shapes world has one (backends/shapes/region_planner.py); --generator models do not."""
        from backends.plugins import DEFAULT_WORLD, get_region_planner

        name = model or DEFAULT_WORLD
        if name == DEFAULT_WORLD and self.generator_spec().kind != "shapes":
            return None
        return get_region_planner(name)

    def prompt_layout(self):
        """The active generator's way to lay out a prompt that names several objects (the Shapes
        world's, backends/shapes/prompt_layout.py), or None (--generator models)."""
        from backends.plugins import DEFAULT_WORLD, get_prompt_layout

        return get_prompt_layout(DEFAULT_WORLD) if self.generator_spec().kind == "shapes" else None

    def edit_check(self):
        """The active generator's check for broken edited frames (the Shapes world's,
        backends/shapes/edit_checks.py), or None (--generator models: no frame counts as broken)."""
        from backends.plugins import DEFAULT_WORLD, get_edit_check

        return get_edit_check(DEFAULT_WORLD) if self.generator_spec().kind == "shapes" else None

    def world_pipeline(self, world: str | None = None):
        """The generator a world ships (default: the embedded one), whatever --generator says."""
        from backends.plugins import DEFAULT_WORLD, get_generator

        return get_generator(world or DEFAULT_WORLD).load_pipeline(device=self.device)

    def world_encoder(self, name: str, world: str | None = None):
        """A world's image encoder by name (e.g. "shapes-cnn")."""
        from backends.plugins import DEFAULT_WORLD, get_encoder_family

        return get_encoder_family(world or DEFAULT_WORLD).load(name, device=self.device)

    def judge(self, world: str | None = None):
        """A world's factor judge (evaluation only), or None."""
        from backends.plugins import DEFAULT_WORLD, get_evaluator

        return get_evaluator(world or DEFAULT_WORLD)

    # -- uploads ----------------------------------------------------------------------
    def encoder_spec(self) -> str:
        """The image encoder in use (--encoder): the one asked for when it can load here, else
        the Shapes CNN encoder (with a note)."""
        from backends.representations.encoders import canonical_spec, encoder_unavailable

        with self._lock:
            if self._enc_spec is not None:
                return self._enc_spec
        spec = self.settings.encoder or "shapes"
        try:
            why = encoder_unavailable(spec)
        except InputError as exc:
            why = str(exc)
        if why is not None and spec not in ("shapes", "shapes-cnn"):
            with self._lock:
                self._notes.append(f"image encoder {spec!r} cannot be used: {why}; using shapes-cnn instead")
            spec = "shapes-cnn"
        spec = canonical_spec(spec)
        with self._lock:
            self._enc_spec = spec
        if not spec.startswith("shapes"):  # an OpenCLIP choice is also a space the Stitching tab compares
            from backends.representations.stitching import register_encoder_space

            register_encoder_space(spec, device=self.device)
        return spec

    def image_encoder(self):
        """The active image encoder object (encode_images / encode_texts), or None when even the
        Shapes weights are missing."""
        from backends.representations.encoders import get_image_encoder

        try:
            return get_image_encoder(self.encoder_spec(), device=self.device)
        except (FileNotFoundError, InputError):
            return None

    def goal_text_encoder(self):
        """texts -> unit vectors for free-text goals (cluster-name re-ranking): MiniLM (None: the default)
        with --text-encoder minilm or the Shapes encoders, else the chosen encoder's own text tower."""
        if self.settings.text_encoder == "minilm" or self.encoder_spec().startswith("shapes"):
            return None
        enc = self.image_encoder()
        return None if enc is None else enc.encode_texts

    def image_embedder(self):
        """encode_images of the active image encoder for image uploads, or None (the loaders then
        use 16×16 downsampled pixels). Its encoder's text tower gives those corpora search by meaning."""
        return _LazyImageEmbedder(self)

    def add_path(self, path: str | list[str], scaling: str = "auto", *, operator: bool = False) -> str:
        """Load a user corpus from a file, folder or several files (vectors.tsv + metadata.tsv).
        scaling: how a table's numeric columns are scaled ("auto", "z-score", "robust", "none"; see
        backends.corpora.loaders.load_path). operator: a file the person running the server named
        (--data): no upload size limit, the memory budget decides (settings.operator_limits)."""
        from backends.corpora import loaders as datasets

        paths = [path] if isinstance(path, str) else list(path)
        s = self.settings
        kwargs = dict(max_bytes=2 ** 62 if operator else s.max_upload_bytes, image_embedder=self.image_embedder(),
                      limits=s.operator_limits if operator else s.upload_limits, scaling=scaling)
        corpus = datasets.load_paths(paths, **kwargs) if len(paths) > 1 else datasets.load_path(paths[0], **kwargs)
        from pathlib import Path as _P

        source = _P(paths[0]).name + (f" + {len(paths) - 1} more" if len(paths) > 1 else "")
        self.check_memory(corpus, source)
        key = self.add_corpus(corpus)
        scaled = datasets.applied_scaling(corpus.notes)
        source += f" ({scaled})" if scaled else ""  # the raw and the scaled upload of one file differ in the menu
        with self._lock:
            self._labels[key] = _label(source, len(corpus), corpus.dim)
        try:
            self.uploads.save(key, corpus, source=source)
        except OSError as exc:  # a full disk must not lose the upload for this session
            corpus.notes.append(f"not kept for the next visit: {exc}")
        return key

    def check_memory(self, corpus: Corpus, source: str | None = None) -> None:
        """Refuse a corpus whose estimated memory when served (vectors, index, map, metadata:
        backends/corpora/memory.py) is over the budget (settings.memory_budget_gb, default 60% of
        the machine's memory), naming the file, its size, the estimate and the budget."""
        from backends.corpora.memory import estimate_corpus, over_budget

        s = self.settings
        est = estimate_corpus(corpus, exact_below=s.exact_index_below, ivf_above=s.ivf_index_above)
        refusal = over_budget(est, s.memory_budget_bytes, source or corpus.name)
        if refusal:
            raise InputError(refusal)

    # -- warming the cache ---------------------------------------------------------------
    def warm_up(self, names: list[str] | None = None, *, log=None, params=None, spaces: bool = True):
        """In a background thread (low priority), open the corpora the tabs start on (the --data
        files first, then the bundled ones) and compute their PCA maps (the Atlas's preview while UMAP
        runs: seconds even for a million rows), default UMAP maps, thumbnails and indexes, then (with
        `spaces`) embed the Stitching tab's spaces, so the first visitor after a start does not wait for
        them (all cached on disk: later starts only read them). Returns the thread."""
        import logging

        log = log or logging.getLogger("latent_atlas").info
        loaded = self.loaded_upload_keys()
        names = [n for n in (loaded + ["digits", "shapes", "hspace"] if names is None else names)
                 if n in loaded or n in self.corpus_names()]

        def run():
            import time

            from backends.corpora.projection import ProjectionParams

            try:
                os.nice(5)  # behind a visitor's requests (Linux: this thread only)
            except (AttributeError, OSError):
                pass
            for name in names:
                t0 = time.perf_counter()
                try:
                    self.projection(name, ProjectionParams(method="pca"))  # shown while UMAP runs
                    self.projection(name, params or ProjectionParams())  # the Atlas's default map
                    self.thumbnail_dir(name)
                    self.index(name)
                    log(f"warmed {name} in {time.perf_counter() - t0:.1f}s")
                except Exception as exc:  # a corpus that cannot load here must not stop the others
                    log(f"could not warm {name}: {type(exc).__name__}: {exc}")
            if spaces:
                from backends.representations.stitching import warm_spaces

                t0 = time.perf_counter()
                done = warm_spaces(self.cache, log=log)
                log(f"warmed {len(done)} stitching spaces in {time.perf_counter() - t0:.1f}s")

        t = threading.Thread(target=run, name="latent-atlas-warm-up", daemon=True)
        t.start()
        return t

    # -- maps and thumbnails ------------------------------------------------------------
    def projection(self, key: str, params, progress=None) -> np.ndarray:
        from backends.corpora.projection import project

        corpus = self.corpus(key)
        return project(corpus.vectors, params, cache=self.cache, fingerprint=corpus.fingerprint,
                       progress=progress, exact_below=self.settings.exact_index_below)

    def thumbnail_dir(self, key: str):
        """PNG thumbnails of a corpus with images, written once to the cache: <dir>/<row>.png."""
        corpus = self.corpus(key)
        if corpus.images is None:
            return None
        d = self.cache.root / "thumbs" / corpus.fingerprint
        done = d / ".complete"
        if done.exists():
            return d
        with self.cache.lock("thumbs", corpus.fingerprint):
            if not done.exists():
                from PIL import Image

                d.mkdir(parents=True, exist_ok=True)
                for i, img in enumerate(corpus.images):
                    Image.fromarray(img).save(d / f"{i}.png", compress_level=1)
                done.touch()
        return d

    def loaded_upload_keys(self) -> list[str]:
        """Uploads in memory now (e.g. the --data files), the most recently used first."""
        with self._lock:
            return list(reversed(self._user))

    def user_corpus_keys(self) -> list[str]:
        """Uploaded corpora, the most recently used first, then the stored ones not loaded now."""
        with self._lock:
            live = list(reversed(self._user))
        return live + [k for k in self.uploads.keys() if k not in live]
