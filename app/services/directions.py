"""Directions tab: drag an image along h-space directions of the diffusion model, live.

Pure service first (``DirectionsService``: small keys in, values out, usable without the UI),
then the layout, then the wiring. Per-user state is one small dict {"source": key}; sources
(cached trajectories: latents, noise and h of every step) and directions live in the service,
shared by all users, so each slider move costs one edited denoising pass.

Uploaded images are converted to RGB (transparent pixels composited over black, grey repeated),
centre-cropped to a square and resized to the model's resolution (32×32 for the shipped Shapes generator); images
above 40 megapixels are refused.
"""
from __future__ import annotations

import base64
import io
import math
import tempfile
import threading
import time
from collections import OrderedDict

import gradio as gr
import numpy as np
from gradio.data_classes import FileData

from app.components.display import enlarge
from app.components.errors import api_guard, guard
from app.components.files import uploaded_path
from app.components.tables import empty_table
from backends.errors import InputError
from backends.gpu import gpu_task
from backends.registry import Backends

N_SLOTS = 4  # direction sliders shown at once
SLIDER_RANGE = 10.0  # ± σ on the sliders (the API accepts up to directions.MAX_STRENGTH)
MAX_PIXELS = 40_000_000
MAX_SOURCES = 32
MAX_DIRECTIONS = 256
# the direction library table (judge results, when known, fill the last three)
LIBRARY_COLUMNS = ("id", "name", "kind", "default_strength", "disentanglement", "dominant", "istd")
POSITIONS3 = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")


def _record_half(half) -> str:
    from backends.generative.hspace import check_record_half

    return check_record_half(half or "uncond")


def _edit_half(half) -> str:
    from backends.generative.hspace import check_edit_half

    return check_edit_half(half or "both")


def half_defaults(backends: Backends) -> tuple[str, str]:
    """The tab's starting (record half, Δh half): the Shapes generator's config says which suits it
    (no weights loaded); other generators start at Haas et al.'s ("uncond", "both")."""
    from backends.generative.hspace import EDIT_HALVES, RECORD_HALVES

    record, delta = "uncond", "both"
    d = backends.generator_defaults()
    record = d.get("directions_record_half") if d.get("directions_record_half") in RECORD_HALVES else record
    delta = d.get("directions_delta_half") if d.get("directions_delta_half") in EDIT_HALVES else delta
    return record, delta


def to_data_url(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, np.uint8)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def prepare_image(image, size: int) -> tuple[np.ndarray, list[str]]:
    """Any image (PIL, array, path) -> uint8 (size, size, 3) and notes on what was changed."""
    from PIL import Image

    notes: list[str] = []
    if image is None:
        raise InputError("image: nothing was uploaded")
    if isinstance(image, str):
        try:
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            image = Image.open(image)
            image.load()
        except Image.DecompressionBombError:
            raise InputError(f"image: larger than {MAX_PIXELS // 1_000_000} megapixels") from None
        except Exception as exc:
            raise InputError(f"image: could not read it as an image ({type(exc).__name__})") from None
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise InputError(f"image: expected (H, W), (H, W, 3) or (H, W, 4) pixels, but got shape {image.shape}")
        if arr.dtype != np.uint8:
            a = np.nan_to_num(arr.astype(np.float64))
            arr = (np.clip(a, 0, 1) * 255 if a.max() <= 1.0 else np.clip(a, 0, 255)).round().astype(np.uint8)
        image = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if not hasattr(image, "mode"):
        raise InputError(f"image: unsupported type {type(image).__name__}")
    w, h = image.size
    if w * h > MAX_PIXELS:
        raise InputError(f"image: {w}×{h} is larger than {MAX_PIXELS // 1_000_000} megapixels")
    if w < 8 or h < 8:
        raise InputError(f"image: {w}×{h} is too small (at least 8×8)")
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(bg, rgba)
        notes.append("transparent pixels composited over black")
    if image.mode != "RGB":
        if image.mode in ("L", "I", "I;16", "F", "1"):
            notes.append("grey image repeated to RGB")
        image = image.convert("RGB")
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        image = image.crop((left, top, left + s, top + s))
        notes.append(f"centre-cropped from {w}×{h} to {s}×{s}")
    if image.size != (size, size):
        notes.append(f"resized from {image.size[0]}×{image.size[1]} to {size}×{size}")
        image = image.resize((size, size), Image.LANCZOS)
    return np.asarray(image, dtype=np.uint8).copy(), notes


def region_mask(region: str, latent_size: int) -> np.ndarray | None:
    """'' -> None; a 3×3 cell name ('top left') or 'x0,y0,x1,y1' (fractions) -> (s, s) float mask."""
    region = (region or "").strip().lower()
    if not region:
        return None
    m = np.zeros((latent_size, latent_size), np.float32)
    if region in POSITIONS3:
        i = POSITIONS3.index(region)
        r, c = divmod(i, 3)
        box = (c / 3, r / 3, (c + 1) / 3, (r + 1) / 3)
    else:
        try:
            box = tuple(float(v) for v in region.split(","))
        except ValueError:
            box = ()
        if len(box) != 4 or not all(0 <= v <= 1 for v in box) or box[0] >= box[2] or box[1] >= box[3]:
            raise InputError(f"region has to be a cell name ({', '.join(POSITIONS3)}) or 'x0,y0,x1,y1' "
                             f"fractions with x0 < x1, y0 < y1, but is {region!r}")
    x0, y0, x1, y1 = (int(round(v * latent_size)) for v in box)
    m[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1.0
    return m


class DirectionsService:
    """What the Directions tab (and its API) does, independent of the layout."""

    def __init__(self, backends: Backends, pipe=None, judge=None):
        self.b = backends
        self._pipe = pipe if pipe is not None else getattr(backends, "directions_pipe", None)
        self._judge = judge if judge is not None else getattr(backends, "directions_judge", None)
        self._sources: OrderedDict = OrderedDict()
        self._dirs: OrderedDict = OrderedDict()
        self._lock = threading.RLock()
        self.n_bank = int(getattr(backends, "directions_bank_size", 200))

    # -- models -----------------------------------------------------------------------
    @property
    def pipe(self):
        if self._pipe is None:
            if hasattr(self.b, "generator_pipeline"):
                self._pipe = self.b.generator_pipeline()  # --generator (Shapes by default)
            else:
                from backends.generative.hspace_corpus import default_pipe

                self._pipe = default_pipe()
        return self._pipe

    @property
    def judge(self):
        if self._judge is None:
            from backends.generative.hspace_corpus import default_judge

            self._judge = default_judge() or False
        return self._judge or None

    @property
    def image_size(self) -> int:
        from backends.generative.hspace import image_size

        return image_size(self.pipe)

    def _layer(self, layer) -> str:
        from backends.generative.hspace import DEFAULT_LAYER, resolve_layer

        layer = layer or DEFAULT_LAYER
        resolve_layer(self.pipe.unet, layer)
        return layer

    def layers(self) -> list[str]:
        from backends.generative.hspace import available_layers

        return available_layers(self.pipe.unet)

    def bank(self, n: int | None = None, progress=None, layer: str | None = None, half: str | None = None):
        """The h-space bank at `layer`, h read from the guidance half `half` ("uncond", the default, or "cond")."""
        from backends.generative.hspace_corpus import shapes_bank

        return shapes_bank(self.pipe, n or self.n_bank, cache=self.b.cache, judge=self.judge, progress=progress,
                           layer=self._layer(layer), record_half=_record_half(half))

    # -- sources ------------------------------------------------------------------------
    def _put_source(self, traj, key: str) -> str:
        with self._lock:
            self._sources[key] = traj
            self._sources.move_to_end(key)
            while len(self._sources) > MAX_SOURCES:
                self._sources.popitem(last=False)
        return key

    def source(self, key: str):
        with self._lock:
            if key in self._sources:
                self._sources.move_to_end(key)
                return self._sources[key]
        raise InputError(f"unknown source {key!r}: start from a prompt, an Atlas item or an image first")

    @staticmethod
    def _int(v, name: str, lo: int, hi: int) -> int:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise InputError(f"{name} has to be a whole number, but is {v!r}") from None
        if not math.isfinite(f) or f != int(f) or not lo <= f <= hi:
            raise InputError(f"{name} has to be a whole number between {lo} and {hi}, but is {v!r}")
        return int(f)

    @staticmethod
    def _float(v, name: str, lo: float, hi: float) -> float:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise InputError(f"{name} has to be a number, but is {v!r}") from None
        if not math.isfinite(f) or not lo <= f <= hi:
            raise InputError(f"{name} has to be between {lo:g} and {hi:g}, but is {v!r}")
        return f

    def _guidance(self, g) -> float | None:
        if g is None or (isinstance(g, (int, float)) and g < 0):
            return None
        return self._float(g, "guidance_scale", 0, 30)

    @gpu_task(duration=60)
    def source_from_prompt(self, prompt: str, seed=0, steps=10, eta=1.0, guidance_scale=None,
                           layer: str | None = None) -> tuple[str, dict]:
        from backends.generative import hspace as hspace
        from backends.cache import content_key

        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("prompt is empty: describe the image, e.g. 'a red circle in the center'")
        prompt = prompt.strip()[:300]
        seed = self._int(seed, "seed", 0, 2 ** 31 - 1)
        steps = self._int(steps, "steps", 2, 50)
        eta = self._float(eta, "eta", 0, 1)
        g = self._guidance(guidance_scale)
        layer = self._layer(layer)
        key = "src-" + content_key("prompt", prompt, seed, steps, eta, g, layer)[:16]
        with self._lock:
            if key in self._sources:
                return key, self.describe(key)
        traj = hspace.generate(self.pipe, prompt, seeds=seed, steps=steps, eta=eta, guidance_scale=g, layer=layer)
        self._put_source(traj, key)
        return key, self.describe(key)

    @gpu_task(duration=60)
    def source_from_image(self, image, prompt: str = "", method: str = "ddpm", steps=10, eta=1.0,
                          guidance_scale=None, layer: str | None = None) -> tuple[str, dict]:
        from backends.generative import hspace as hspace
        from backends.cache import content_key

        steps = self._int(steps, "steps", 2, 50)
        eta = self._float(eta, "eta", 0, 1)
        if method not in hspace.INVERSION_METHODS:
            raise InputError(f"method has to be one of {', '.join(hspace.INVERSION_METHODS)}, but is {method!r}")
        if method == "ddpm" and eta == 0:
            eta = 1.0
        img, notes = prepare_image(image, self.image_size)
        prompt = (prompt or "").strip()[:300]
        g = self._guidance(guidance_scale)
        layer = self._layer(layer)
        key = "src-" + content_key("image", img, prompt, method, steps, eta, g, layer)[:16]
        with self._lock:
            if key in self._sources:
                return key, self.describe(key)
        traj = hspace.invert(self.pipe, img, prompt or "", method=method, steps=steps, eta=eta, guidance_scale=g,
                             layer=layer)
        traj.info["notes"] = notes
        traj.info["codec_psnr"] = hspace.codec_psnr(self.pipe, img[None])
        self._put_source(traj, key)
        return key, self.describe(key)

    def source_from_item(self, corpus: str, item_id: str, steps=10, method: str = "ddpm",
                         layer: str | None = None) -> tuple[str, dict]:
        """An Atlas item: generated h-space samples are regenerated from their prompt and seed;
        items with images are inverted (their caption as the prompt)."""
        c = self.b.corpus(corpus)
        hit = np.flatnonzero((c.meta["id"] == str(item_id)).to_numpy())
        if len(hit) == 0:
            raise InputError(f"no item with id {item_id!r} in corpus {corpus!r}")
        i = int(hit[0])
        row = c.meta.iloc[i]
        if "prompt" in c.meta.columns and "seed" in c.meta.columns:
            return self.source_from_prompt(str(row["prompt"]), int(row["seed"]), steps, layer=layer)
        if c.images is None:
            raise InputError(f"corpus {corpus!r} has no images to start from")
        prompt = str(row["caption"]) if "caption" in c.meta.columns else (c.texts[i] if c.texts else "")
        return self.source_from_image(c.images[i], prompt, method, steps, layer=layer)

    def describe(self, key: str) -> dict:
        t = self.source(key)
        d = {"source": key, "kind": t.kind, "prompt": t.prompts[0], "steps": t.steps, "eta": t.eta,
             "timesteps": [int(x) for x in t.timesteps], "h_shape": list(t.h_shape), "layer": t.layer}
        if t.original is not None:
            d["psnr"] = round(float(t.info["psnr"][0]), 2) if np.isfinite(t.info["psnr"][0]) else "inf"
            d["codec_psnr"] = "inf" if not np.isfinite(t.info.get("codec_psnr", np.inf)) else round(t.info["codec_psnr"], 2)
            d["notes"] = t.info.get("notes", [])
        return d

    # -- the direction library ------------------------------------------------------------
    def add(self, d) -> str:
        with self._lock:
            base, i = d.id, 2
            while d.id in self._dirs and self._dirs[d.id] is not d:
                old = self._dirs[d.id]
                if old.vectors.shape == d.vectors.shape and np.array_equal(old.vectors, d.vectors):
                    return d.id
                d.id = f"{base}-{i}"
                i += 1
            self._dirs[d.id] = d
            while len(self._dirs) > MAX_DIRECTIONS:
                self._dirs.popitem(last=False)
        return d.id

    def get(self, did: str):
        with self._lock:
            if did in self._dirs:
                return self._dirs[did]
            known = ", ".join(list(self._dirs)[:20]) or "(none yet: discover or import some)"
        raise InputError(f"Unknown direction: {did!r}. Must be one of: {known}")

    def list(self) -> list[dict]:
        with self._lock:
            return [d.summary() for d in self._dirs.values()]

    def choices(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(f"{d.name} [{d.id}]", d.id) for d in self._dirs.values()]

    def discover_pca(self, n_samples=None, k=10, progress=None, layer: str | None = None,
                     half: str | None = None) -> list[str]:
        from backends.generative import directions as D

        k = self._int(k, "k", 1, 50)
        n = self._int(n_samples or self.n_bank, "n_samples", 8, 5000)
        layer, half = self._layer(layer), _record_half(half)
        bank = self.bank(n, progress, layer, half)
        prefix = "pc" if layer == "mid_block" else layer.replace("_blocks.", "") + "-pc"
        prefix = ("cond-" if half == "cond" else "") + prefix
        dirs = D.pca_directions(bank, k=k, prefix=prefix)
        for d in dirs:
            d.meta["bank"] = getattr(bank, "key", "")
            d.meta["record_half"] = half
            if half == "cond":
                d.name += " (conditional h)"
        return [self.add(d) for d in dirs]

    def supervised(self, factor: str, value: str, from_value: str = "", orthogonal_to=(), labels: str = "truth",
                   n_samples=None, layer: str | None = None, half: str | None = None) -> str:
        from backends.generative import directions as D

        if labels not in ("truth", "judge"):
            raise InputError(f"labels has to be 'truth' or 'judge', but is {labels!r}")
        half = _record_half(half)
        bank = self.bank(self._int(n_samples or self.n_bank, "n_samples", 8, 5000), layer=layer, half=half)
        if labels == "judge" and bank.judged is None:
            raise InputError("there is no judge to label the samples; use labels='truth'")
        d = D.factor_direction(bank, str(factor), str(value), from_value=from_value or None, labels=labels)
        d.meta["record_half"] = half
        if half == "cond":
            d.id, d.name = d.id + "-cond", d.name + " (conditional h)"
        others = [self.get(o) for o in (orthogonal_to or [])]
        if others:
            d = D.orthogonalize(d, others, bank)
        return self.add(d)

    def groups(self, pos: list[int], neg: list[int], name: str = "group A → group B", layer: str | None = None,
               half: str | None = None) -> str:
        from backends.generative import directions as D

        return self.add(D.group_direction(self.bank(layer=layer, half=half), [int(i) for i in pos], [int(i) for i in neg],
                                          name=name))

    def prompt_pair(self, prompt_a: str, prompt_b: str, n=8, layer: str | None = None) -> str:
        from backends.generative import directions as D

        n = self._int(n, "n", 1, 64)
        layer = self._layer(layer)
        return self.add(D.prompt_pair_direction(self.pipe, prompt_a, prompt_b, n=n, reference=self.bank(layer=layer),
                                                layer=layer))

    def text(self, prompt_a: str, prompt_b: str) -> str:
        from backends.generative import directions as D

        return self.add(D.text_direction(self.pipe, prompt_a, prompt_b))

    @gpu_task(duration=60)
    def image_specific(self, source: str, step=2, k=3, region: str = "") -> list[str]:
        from backends.generative import directions as D

        traj = self.source(source)
        step = self._int(step, "step", 0, traj.steps - 1)
        k = self._int(k, "k", 1, 8)
        mask = region_mask(region, self.pipe.latent_size)
        dirs, _ = D.jacobian_directions(self.pipe, traj, step, k=k, iters=30, tol=1e-4, mask=mask)
        for d in dirs:
            d.id = f"{source[4:12]}-{d.id}" + ("-region" if mask is not None else "")
            d.name = f"{d.name}" + (f" in {region}" if mask is not None else "")
        return [self.add(d) for d in dirs]

    # -- editing --------------------------------------------------------------------------
    @gpu_task(duration=20)
    def edit(self, source: str, ids, strengths, t_start=0.0, t_end=1.0, asymmetric: bool = False,
             delta_half: str = "both") -> np.ndarray:
        from backends.generative import directions as D

        traj = self.source(source)
        ids = [i for i in (ids or []) if i]
        strengths = list(strengths or [])
        if len(ids) != len(strengths):
            raise InputError(f"{len(strengths)} strengths for {len(ids)} directions")
        dirs = [self.get(i) for i in ids]
        ss = [D.check_strength(s, f"strength of {i!r}") for i, s in zip(ids, strengths)]
        t0 = self._float(t_start, "t_start", 0, 1)
        t1 = self._float(t_end, "t_end", 0, 1)
        if t0 >= t1:
            raise InputError(f"t_start ({t0:g}) has to be below t_end ({t1:g})")
        keep = [(d, s) for d, s in zip(dirs, ss) if s != 0]
        if not keep:
            return traj.images[0]
        for d, _ in keep:
            if d.kind != "text" and D.layer_of(d) == traj.layer and tuple(d.h_shape) != tuple(traj.h_shape):
                raise InputError(f"direction {d.id!r} was made for h of shape {d.h_shape}; this model's h is {traj.h_shape}")
        return D.render(self.pipe, traj, [d for d, _ in keep], [s for _, s in keep], t_range=(t0, t1),
                        asymmetric=bool(asymmetric), delta_half=_edit_half(delta_half))[0]

    @gpu_task(duration=60)
    def strip(self, source: str, did: str, strength=None, frames=11, t_start=0.0, t_end=1.0, delta_half: str = "both"):
        from backends.generative import directions as D

        traj = self.source(source)
        d = self.get(did)
        s = d.default_strength if strength in (None, "") else D.check_strength(strength)
        frames = self._int(frames, "frames", 3, 21)
        t0, t1 = self._float(t_start, "t_start", 0, 1), self._float(t_end, "t_end", 0, 1)
        if t0 >= t1:
            raise InputError(f"t_start ({t0:g}) has to be below t_end ({t1:g})")
        ss, imgs = D.traversal(self.pipe, traj, d, strength=s, frames=frames, t_range=(t0, t1),
                               delta_half=_edit_half(delta_half))
        return ss, imgs, D.istd(imgs)

    def judge_direction(self, did: str, n_sources=12, strength=None) -> dict:
        from backends.generative import directions as D
        from backends.generative import hspace as hspace

        judge = self.judge
        if judge is None:
            raise InputError("there is no judge (assets/shapes/judge.safetensors) to read what changes")
        d = self.get(did)
        n = self._int(n_sources, "n_sources", 1, 64)
        prompts, _ = D.shapes_prompts(n, seed=7)
        src = hspace.generate(self.pipe, prompts, seeds=1000, steps=10)
        s = None if strength in (None, "") else D.check_strength(strength)
        rep = D.judge_direction(self.pipe, d, src, judge, strength=s, istd_samples=2)
        d.meta.update({"judged_name": rep["name"], "disentanglement": round(rep["disentanglement"], 3),
                       "dominant": rep["dominant"], "istd": round(rep.get("istd", float("nan")), 4),
                       "changes": {k: round(v, 3) for k, v in rep["changes"].items()}})
        if d.kind == "pca" and rep["name"] != "no visible change":
            d.name = f"{rep['name']} (PC {d.meta.get('component', '?')})"
        return rep

    # -- the h-space map ------------------------------------------------------------------
    def _axis(self, name: str):
        name = (name or "").strip()
        if not name or name.lower().startswith("pca"):
            k = int(name.split()[-1]) - 1 if name[3:].strip().isdigit() else 0
            return max(0, k)
        return self.get(name)

    def map_data(self, step=5, x_axis: str = "PCA 1", y_axis: str = "PCA 2", item=None, layer=None, half=None) -> dict:
        """The bank at `step` on two axes (a direction id, or 'PCA k'), with `item`'s trajectory."""
        from backends.generative.hspace_corpus import map_coordinates

        bank = self.bank(layer=layer, half=half)
        step = self._int(step, "step", 0, bank.h.shape[1] - 1)
        item = None if item in (None, "", -1) else self._int(item, "item", 0, len(bank) - 1)
        xy, traj, titles = map_coordinates(bank, self._axis(x_axis), self._axis(y_axis), step, item)
        return {"xy": xy, "trajectory": traj, "titles": titles, "bank": bank, "step": step, "item": item}

    def map_payload(self, step=5, x_axis="PCA 1", y_axis="PCA 2", color_by="colour", item=None, layer=None,
                    half=None) -> str:
        from app.components.scatter import scatter_payload

        m = self.map_data(step, x_axis, y_axis, item, layer, half)
        bank, xy = m["bank"], m["xy"]
        n = len(bank)
        table = bank.factors if bank.factors is not None else None
        if color_by.startswith("judged_") and bank.judged is not None:
            color = bank.judged[color_by[7:]].astype(str).to_numpy()
        elif table is not None and color_by in table.columns:
            color = table[color_by].astype(str).to_numpy()
        else:
            color = np.asarray(bank.prompts, dtype=object)
        ids = [f"h-{i}" for i in range(n)]
        hover = [f"h-{i} · {p}" for i, p in enumerate(bank.prompts)]
        highlight = None
        if m["trajectory"] is not None:
            tr = m["trajectory"]
            xy = np.concatenate([xy, tr])
            color = np.concatenate([color.astype(object), np.array([f"trajectory of h-{m['item']}"] * len(tr), dtype=object)])
            ids += [f"h-{m['item']}@step{s}" for s in range(len(tr))]
            hover += [f"h-{m['item']} at step {s} (t={int(bank.timesteps[s])})" for s in range(len(tr))]
            highlight = [m["item"]] + list(range(n, n + len(tr)))
        key = self.b.add_corpus(_bank_corpus_cached(bank, m["step"]))
        thumbs = self.b.thumbnail_dir(key)
        return scatter_payload(xy, ids=ids, color=color, color_name=color_by, hover=hover,
                               thumb_url=f"/gradio_api/file={thumbs}/{{i}}.png" if thumbs else None,
                               highlight=highlight, title=f"h-space at step {m['step']} · {n} samples",
                               dragmode="zoom", axis_titles=m["titles"],
                               uirevision=f"{m['step']}:{x_axis}:{y_axis}:{color_by}:{layer}")

    # -- export / import ----------------------------------------------------------------
    def export(self, ids) -> str:
        from backends.generative import directions as D
        from backends.generative.hspace_corpus import pipe_fingerprint

        dirs = [self.get(i) for i in (ids or [])] or [self.get(i) for i in list(self._dirs)]
        path = tempfile.mkdtemp(prefix="directions-") + "/directions.safetensors"
        return D.save_directions(dirs, path, model=pipe_fingerprint(self.pipe))

    def import_file(self, path: str) -> list[str]:
        from backends.generative import directions as D

        dirs = D.load_directions(path, h_shape=self._h_shape())
        if not dirs:
            raise InputError("the directions file holds no directions")
        return [self.add(d) for d in dirs]

    def _h_shape(self):
        from backends.generative import hspace as hspace

        with self._lock:
            mids = [t for t in self._sources.values() if t.layer == hspace.DEFAULT_LAYER]
        if mids:
            return mids[-1].h_shape
        tr = hspace.generate(self.pipe, "a shape", seeds=0, steps=2)
        return tr.h_shape

    def to_atlas(self, step=5, n_samples=None, layer=None, half=None) -> str:
        from backends.generative.hspace_corpus import bank_corpus

        bank = self.bank(self._int(n_samples or self.n_bank, "n_samples", 8, 5000), layer=layer, half=half)
        step = self._int(step, "step", 0, bank.h.shape[1] - 1)
        suffix = "" if bank.layer == "mid_block" else "-" + bank.layer.replace("_blocks.", "")
        suffix += "-cond" if bank.record_half == "cond" else ""
        corpus = bank_corpus(bank, step, name=f"hspace{suffix}-step{step}")
        return self.b.add_corpus(corpus)


_CORPORA: dict = {}


def _bank_corpus_cached(bank, step: int):
    """One Corpus object per (bank, step), so the Atlas key and its thumbnails are reused."""
    from backends.generative.hspace_corpus import bank_corpus

    key = (getattr(bank, "key", id(bank)), int(step))
    if key not in _CORPORA:
        _CORPORA[key] = bank_corpus(bank, int(step), name=f"hspace-step{int(step)}")
    return _CORPORA[key]


# ----------------------------------------------------------------------------------------
# Layout and wiring

def build_directions(backends: Backends):
    import functools

    from app.components.scatter import scatter_map

    svc = DirectionsService(backends)
    record_default, delta_default = half_defaults(backends)


    def info_md(d: dict) -> str:
        s = f"**Source** `{d['source']}` · {d['kind']} · {d['steps']} steps · η={d['eta']:g}"
        if "psnr" in d:
            s += f"\n\nReconstruction PSNR **{d['psnr']} dB** (codec round trip: {d['codec_psnr']} dB)"
        if d.get("notes"):
            s += "\n\nInput: " + "; ".join(d["notes"])
        return s

    def slot_updates():
        ch = svc.choices()
        return [gr.update(choices=ch) for _ in range(N_SLOTS)]

    def table():
        import pandas as pd

        rows = svc.list()
        cols = list(LIBRARY_COLUMNS)
        return pd.DataFrame([{c: r.get(c, "") for c in cols} for r in rows], columns=cols)

    def lib_outputs(selected: list[str] | None = None):
        """Table, strip / judge / orthogonal-to menus and the slots after the library changed; new
        directions go into the slots, and the first into the strip and judge menus (so "Make strip"
        or "Judge" right after adding one works on it)."""
        ch = svc.choices()
        sel = list(selected or [])
        slots = [gr.update(choices=ch, value=sel[i]) if i < len(sel) else gr.update(choices=ch) for i in range(N_SLOTS)]
        def newest():  # a dict per output: Gradio consumes each update it applies
            return gr.update(choices=ch, value=sel[0]) if sel else gr.update(choices=ch)

        return [table(), newest(), newest(), gr.update(choices=ch)] + slots

    # -- handlers ----------------------------------------------------------------------
    @guard
    def ui_prompt(prompt, seed, steps, eta, guidance, layer):
        key, d = svc.source_from_prompt(prompt, seed, steps, eta, guidance, layer)
        img = enlarge(svc.source(key).images[0])
        return ({"source": key}, img, img, info_md(d)) + tuple(gr.update(value=0) for _ in range(N_SLOTS))

    @guard
    def ui_upload(image, prompt, method, steps, eta, guidance, layer):
        key, d = svc.source_from_image(image, prompt, method, steps, eta, guidance, layer)
        t = svc.source(key)
        return ({"source": key}, enlarge(t.original[0]), enlarge(t.images[0]), info_md(d)) + \
            tuple(gr.update(value=0) for _ in range(N_SLOTS))

    @guard
    def ui_item(corpus, item_id, steps, layer):
        key, d = svc.source_from_item(corpus, item_id, steps, layer=layer)
        t = svc.source(key)
        src = t.original[0] if t.original is not None else t.images[0]
        return ({"source": key}, enlarge(src), enlarge(t.images[0]), info_md(d)) + \
            tuple(gr.update(value=0) for _ in range(N_SLOTS))

    def ui_edit(state, t0, t1, asym, half, *slots):
        if not state or not state.get("source"):
            return gr.skip()
        ids, ss = list(slots[:N_SLOTS]), list(slots[N_SLOTS:])
        pairs = [(i, s) for i, s in zip(ids, ss) if i]
        try:
            return enlarge(svc.edit(state["source"], [i for i, _ in pairs], [s for _, s in pairs], t0, t1, asym, half))
        except InputError as exc:
            raise gr.Error(str(exc)) from None

    @guard
    def ui_pca(n, k, layer, rhalf, progress=gr.Progress()):
        ids = svc.discover_pca(n, k, progress=lambda f, m: progress(f, desc=m), layer=layer, half=rhalf)
        return [f"Found {len(ids)} PCA directions over {int(n)} samples."] + lib_outputs(ids)

    @guard
    def ui_supervised(factor, value, from_value, ortho, labels, layer, rhalf):
        did = svc.supervised(factor, value, from_value or "", ortho or [], labels, layer=layer, half=rhalf)
        return [f"Added **{svc.get(did).name}** (default strength {svc.get(did).default_strength:.2f}σ)."] + lib_outputs([did])

    @guard
    def ui_groups(a, b, layer, rhalf):
        def parse(text, name):
            out = []
            for tok in (text or "").replace(";", ",").split(","):
                tok = tok.strip()
                if not tok:
                    continue
                try:
                    out.append(int(tok[2:] if tok.startswith("h-") else tok))
                except ValueError:
                    raise InputError(f"{name}: {tok!r} is not a sample id like h-3") from None
            if not out:
                raise InputError(f"{name} is empty: list sample ids like h-3, h-17")
            return out

        did = svc.groups(parse(b, "group B"), parse(a, "group A"), name=f"group ({a.strip()[:20]}) → ({b.strip()[:20]})",
                         layer=layer, half=rhalf)
        return [f"Added **{svc.get(did).name}**."] + lib_outputs([did])

    @guard
    def ui_pair(a, b, n, layer):
        did = svc.prompt_pair(a, b, n, layer)
        return [f"Added **{svc.get(did).name}**."] + lib_outputs([did])

    @guard
    def ui_text(a, b):
        did = svc.text(a, b)
        return [f"Added text direction **{svc.get(did).name}** (strength 1 = prompt B)."] + lib_outputs([did])

    @guard
    def ui_jacobian(state, step, k, region):
        if not state or not state.get("source"):
            raise InputError("start from a prompt, an Atlas item or an image first")
        ids = svc.image_specific(state["source"], step, k, region)
        return [f"Added {len(ids)} image-specific directions."] + lib_outputs(ids)

    @guard
    def ui_import(file):
        if file is None:
            raise InputError("no file was uploaded")
        ids = svc.import_file(file if isinstance(file, str) else file.name)
        return [f"Imported {len(ids)} directions."] + lib_outputs(ids)

    @guard
    def ui_export(ids):
        return svc.export(ids or [])

    @guard
    def ui_strip(state, did, strength, frames, t0, t1, half):
        if not state or not state.get("source"):
            raise InputError("start from a prompt, an Atlas item or an image first")
        if not did:
            raise InputError("choose a direction for the strip")
        ss, imgs, ist = svc.strip(state["source"], did, strength if strength else None, frames, t0, t1, half)
        return [(enlarge(im, 128), f"{s:+.1f}σ") for s, im in zip(ss, imgs)], f"ISTD (smoothness; lower is smoother): **{ist:.4f}**"

    @guard
    def ui_judge(did, n):
        if not did:
            raise InputError("choose a direction to judge")
        rep = svc.judge_direction(did, n)
        ch = ", ".join(f"{k} {v:.0%}" for k, v in rep["changes"].items())
        md = (f"**{rep['name']}** — changed: {ch}; disentanglement **{rep['disentanglement']:.2f}** "
              f"(share of the change in {rep['dominant']}); ISTD {rep.get('istd', float('nan')):.4f}")
        return [md] + lib_outputs()

    @guard
    def ui_atlas(step, n, layer, rhalf):
        key = svc.to_atlas(step, n, layer, rhalf)
        return f"Added corpus `{key}` to the Atlas (pick it in the Atlas tab's corpus menu)."

    # -- layout ------------------------------------------------------------------------
    state = gr.State({})
    gr.Markdown("Move an image along directions of the diffusion model's semantic latent space (h-space: the "
                "UNet bottleneck). Start from a prompt, an Atlas item or your own image, add directions, drag.")
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            with gr.Tab("Prompt"):
                prompt = gr.Textbox(value="a red circle in the center", label="Prompt", elem_id="dir-prompt")
                seed = gr.Number(value=0, precision=0, label="Seed")
                gen_btn = gr.Button("Generate", variant="primary", elem_id="dir-generate")
            with gr.Tab("Atlas item"):
                item_corpus = gr.Textbox(value="hspace", label="Corpus")
                item_id = gr.Textbox(label="Item id", placeholder="h-0")
                item_btn = gr.Button("Start from item")
            with gr.Tab("Upload"):
                upload = gr.Image(type="pil", label="Your image (converted to RGB, centre-cropped, resized)",
                                  image_mode=None, height=160)
                up_prompt = gr.Textbox(label="Prompt describing it (optional)")
                method = gr.Radio(["ddpm", "ddim"], value="ddpm", label="Inversion",
                                  info="ddpm: DDPM-noise inversion (exact); ddim: DDIM inversion")
                up_btn = gr.Button("Invert")
            with gr.Accordion("Sampler", open=False):
                steps = gr.Slider(2, 50, value=10, step=1, label="Steps")
                eta = gr.Slider(0, 1, value=1.0, step=0.05, label="η (DDIM noise)")
                guidance = gr.Slider(-1, 15, value=-1, step=0.5, label="Guidance (−1: default)",
                                     info="the model's for prompts and DDPM-noise inversion; 1 for DDIM inversion")
                layer = gr.Dropdown(["mid_block"] + [f"up_blocks.{i}" for i in range(3)], value="mid_block",
                                    allow_custom_value=True, label="Layer",
                                    info="mid_block: h-space (Haas et al.); up blocks: later layers, for models "
                                         "whose decoder leans on skip connections")
                rhalf = gr.Radio(["uncond", "cond"], value=record_default, label="h of the samples read from the guidance half",
                                 info="for PCA, supervised directions, the h-space map and the Atlas: uncond sees the "
                                      "emerging image; cond also sees the prompt", elem_id="dir-record-half")
            src_info = gr.Markdown(elem_id="dir-source-info")
            src_img = gr.Image(label="Source", height=160, interactive=False, elem_id="dir-source")
        with gr.Column(scale=2, min_width=360):
            out_img = gr.Image(label="Edited", height=320, interactive=False, elem_id="dir-image")
            slot_dd, slot_s = [], []
            for i in range(N_SLOTS):
                with gr.Row():
                    slot_dd.append(gr.Dropdown(choices=[], value=None, label=f"Direction {i + 1}", scale=2,
                                               elem_id=f"dir-slot-{i}"))
                    slot_s.append(gr.Slider(-SLIDER_RANGE, SLIDER_RANGE, value=0, step=0.1, label="strength (σ)",
                                            scale=3, elem_id=f"dir-strength-{i}"))
            with gr.Row():
                t0 = gr.Slider(0, 1, value=0, step=0.05, label="edit from (fraction of steps)")
                t1 = gr.Slider(0, 1, value=1, step=0.05, label="edit until")
            # a row of their own under the sliders: squeezed in beside them, the checkbox's label was cut
            # off and its info text wrapped one word per line; min_width wraps them below each other instead
            with gr.Row(equal_height=True):
                asym = gr.Checkbox(value=False, label="asymmetric (Asyrp: stronger)", min_width=240,
                                   info="x̂0 from the edited prediction, the noise direction from the unedited one")
                half = gr.Radio(["both", "cond"], value=delta_default, label="Δh goes to the guidance half",
                                info="both: like an unguided model; cond: the guidance scale multiplies the edit",
                                min_width=240, elem_id="dir-half")
            with gr.Accordion("Strip of frames along one direction", open=False):
                with gr.Row():
                    strip_dd = gr.Dropdown(choices=[], label="Direction")
                    strip_s = gr.Number(value=0, label="± strength (0: its default)")
                    strip_n = gr.Slider(3, 21, value=11, step=1, label="Frames")
                strip_btn = gr.Button("Make strip")
                strip = gr.Gallery(label="Strip", columns=11, height=140, object_fit="contain", fit_columns=False,
                                   elem_id="dir-strip")
                strip_md = gr.Markdown()
            with gr.Accordion("h-space map (click a sample to start from it)", open=False):
                with gr.Row():
                    map_step = gr.Slider(0, 9, value=5, step=1, label="Step")
                    map_x = gr.Dropdown(choices=["PCA 1"], value="PCA 1", allow_custom_value=True, label="x axis")
                    map_y = gr.Dropdown(choices=["PCA 2"], value="PCA 2", allow_custom_value=True, label="y axis")
                    map_color = gr.Dropdown(["colour", "shape", "size", "position", "judged_colour", "judged_shape",
                                             "prompt"], value="colour", label="Colour by")
                map_btn = gr.Button("Draw map", elem_id="dir-map-draw")
                hmap = scatter_map(height=420, elem_id="dir-map")
        with gr.Column(scale=2, min_width=320):
            msg = gr.Markdown(elem_id="dir-message")
            lib = gr.Dataframe(empty_table(LIBRARY_COLUMNS), label="Directions", interactive=False, max_height=260,
                               elem_id="dir-table")
            with gr.Accordion("Discover: PCA (unsupervised)", open=True):
                with gr.Row():
                    pca_n = gr.Number(value=svc.n_bank, precision=0, label="Samples")
                    pca_k = gr.Number(value=10, precision=0, label="Directions (k)")
                pca_btn = gr.Button("Discover", elem_id="dir-pca")
            with gr.Accordion("Supervised (Shapes factors)", open=False):
                factor = gr.Dropdown(["colour", "shape", "size", "position"], value="colour", label="Factor")
                value = gr.Textbox(value="blue", label="Towards value")
                from_value = gr.Textbox(label="From value (optional; default: all others)")
                labels = gr.Radio(["truth", "judge"], value="truth", label="Labels")
                ortho = gr.Dropdown(choices=[], multiselect=True, label="Orthogonal to (conditional)")
                sup_btn = gr.Button("Add")
                gr.Markdown("Or from two groups of h-space samples (ids on the map, e.g. `h-3, h-17`):")
                grp_a = gr.Textbox(label="Group A (from)")
                grp_b = gr.Textbox(label="Group B (towards)")
                grp_btn = gr.Button("Add A → B")
            with gr.Accordion("Prompt pair / text", open=False):
                pa = gr.Textbox(value="a red circle", label="Prompt A")
                pb = gr.Textbox(value="a blue circle", label="Prompt B")
                pn = gr.Number(value=8, precision=0, label="Seeds")
                with gr.Row():
                    pair_btn = gr.Button("h-space: mean h(B) − h(A)")
                    text_btn = gr.Button("Text: E(B) − E(A)")
            with gr.Accordion("Image-specific (Jacobian)", open=False):
                jstep = gr.Slider(0, 9, value=2, step=1, label="Step")
                jk = gr.Number(value=3, precision=0, label="k")
                jregion = gr.Textbox(label="Region (optional): a cell like 'top left' or x0,y0,x1,y1")
                jac_btn = gr.Button("Find")
            with gr.Accordion("Judge / export / import / Atlas", open=False):
                judge_dd = gr.Dropdown(choices=[], label="Direction to judge")
                judge_n = gr.Number(value=12, precision=0, label="Samples")
                judge_btn = gr.Button("Judge")
                judge_md = gr.Markdown()
                export_dd = gr.Dropdown(choices=[], multiselect=True, label="Export (empty: all)")
                export_btn = gr.Button("Export .safetensors")
                export_file = gr.File(label="Export", interactive=False)
                import_file = gr.File(label="Import .safetensors", file_types=[".safetensors"])
                atlas_step = gr.Slider(0, 9, value=5, step=1, label="Step for the Atlas map")
                atlas_btn = gr.Button("Send h-space to the Atlas")
                atlas_md = gr.Markdown()

    # -- wiring ------------------------------------------------------------------------
    src_outputs = [state, src_img, out_img, src_info] + slot_s
    hidden = dict(api_visibility="undocumented")
    gen_btn.click(ui_prompt, [prompt, seed, steps, eta, guidance, layer], src_outputs, concurrency_id="dir-heavy",
                  **hidden)
    prompt.submit(ui_prompt, [prompt, seed, steps, eta, guidance, layer], src_outputs, concurrency_id="dir-heavy",
                  **hidden)
    up_btn.click(ui_upload, [upload, up_prompt, method, steps, eta, guidance, layer], src_outputs,
                 concurrency_id="dir-heavy", **hidden)
    item_btn.click(ui_item, [item_corpus, item_id, steps, layer], src_outputs, concurrency_id="dir-heavy", **hidden)
    edit_inputs = [state, t0, t1, asym, half] + slot_dd + slot_s
    for s in slot_s + [t0, t1, asym, half]:
        s.input(ui_edit, edit_inputs, out_img, trigger_mode="always_last", show_progress="hidden",
                concurrency_id="dir-edit", concurrency_limit=2, **hidden)
    for dd in slot_dd:
        dd.change(ui_edit, edit_inputs, out_img, trigger_mode="always_last", show_progress="hidden",
                  concurrency_id="dir-edit", **hidden)
    lib_outs = [msg, lib, strip_dd, judge_dd, ortho] + slot_dd

    def with_export(fn):
        """fn's library outputs plus the export menu."""
        @functools.wraps(fn)
        def inner(*a, **kw):
            return fn(*a, **kw) + [gr.update(choices=svc.choices())]

        return inner

    lib_outs_x = lib_outs + [export_dd]
    pca_btn.click(with_export(ui_pca), [pca_n, pca_k, layer, rhalf], lib_outs_x, concurrency_id="dir-heavy", **hidden)
    sup_btn.click(with_export(ui_supervised), [factor, value, from_value, ortho, labels, layer, rhalf], lib_outs_x,
                  concurrency_id="dir-heavy", **hidden)
    grp_btn.click(with_export(ui_groups), [grp_a, grp_b, layer, rhalf], lib_outs_x, concurrency_id="dir-heavy", **hidden)
    pair_btn.click(with_export(ui_pair), [pa, pb, pn, layer], lib_outs_x, concurrency_id="dir-heavy", **hidden)
    text_btn.click(with_export(ui_text), [pa, pb], lib_outs_x, **hidden)
    jac_btn.click(with_export(ui_jacobian), [state, jstep, jk, jregion], lib_outs_x, concurrency_id="dir-heavy", **hidden)
    import_file.upload(with_export(ui_import), [import_file], lib_outs_x, **hidden)
    export_btn.click(ui_export, [export_dd], export_file, **hidden)
    strip_btn.click(ui_strip, [state, strip_dd, strip_s, strip_n, t0, t1, half], [strip, strip_md],
                    concurrency_id="dir-heavy", **hidden)

    ui_judge_x = with_export(ui_judge)

    judge_btn.click(ui_judge_x, [judge_dd, judge_n], [judge_md, lib, strip_dd, judge_dd, ortho] + slot_dd + [export_dd],
                    concurrency_id="dir-heavy", **hidden)
    atlas_btn.click(ui_atlas, [atlas_step, pca_n, layer, rhalf], atlas_md, concurrency_id="dir-heavy", **hidden)

    def axis_choices():
        return ["PCA 1", "PCA 2", "PCA 3"] + [d for _, d in svc.choices()]

    @guard
    def ui_map(step, x, y, color, layer, rhalf, progress=gr.Progress()):
        progress(0.0, desc="sampling the h-space bank (first time only)")
        return (svc.map_payload(step, x, y, color, layer=layer, half=rhalf), gr.update(choices=axis_choices()),
                gr.update(choices=axis_choices()))

    @guard
    def ui_map_click(step, x, y, color, steps, layer, rhalf, evt: gr.EventData):
        data = getattr(evt, "_data", None) or {}
        pid = str(data.get("id", ""))
        if not pid.startswith("h-") or "@" in pid:
            raise InputError("click a sample (not a trajectory point)")
        item = int(pid[2:])
        bank = svc.bank(layer=layer, half=rhalf)
        key, d = svc.source_from_prompt(bank.prompts[item], bank.seeds[item], steps, layer=layer)
        img = svc.source(key).images[0]
        return ((svc.map_payload(step, x, y, color, item, layer, rhalf), {"source": key}, img, img, info_md(d))
                + tuple(gr.update(value=0) for _ in range(N_SLOTS)))

    map_btn.click(ui_map, [map_step, map_x, map_y, map_color, layer, rhalf], [hmap, map_x, map_y], concurrency_id="dir-heavy",
                  **hidden)
    hmap.point_click(ui_map_click, [map_step, map_x, map_y, map_color, steps, layer, rhalf], [hmap] + src_outputs,
                     concurrency_id="dir-heavy", **hidden)

    def ui_refresh():
        return [""] + lib_outputs() + [gr.update(choices=svc.choices())]

    # A new visitor sees the directions already in the (shared) library.
    gr.context.Context.root_block.load(ui_refresh, None, lib_outs_x, **hidden)
    _register_api(svc, api_guard)
    return svc


def _register_api(svc: DirectionsService, guard):
    def directions_source_prompt(prompt: str, seed: int = 0, steps: int = 10, eta: float = 1.0,
                                 guidance_scale: float = -1.0, layer: str = "mid_block") -> dict:
        """Start from a prompt and seed: {"source": key, "image": PNG data URL, ...}; h recorded at `layer`."""
        key, d = svc.source_from_prompt(prompt, seed, steps, eta, guidance_scale, layer)
        return {**d, "image": to_data_url(svc.source(key).images[0])}

    def directions_source_image(file: FileData, prompt: str = "", method: str = "ddpm", steps: int = 10) -> dict:
        """Start from an uploaded image (handle_file(path)): inverted (ddpm: exact; ddim), with PSNRs."""
        key, d = svc.source_from_image(uploaded_path(file), prompt, method, steps)
        return {**d, "image": to_data_url(svc.source(key).images[0])}

    def directions_source_item(corpus: str, item_id: str, steps: int = 10) -> dict:
        """Start from an Atlas item (h-space samples regenerate; image items are inverted)."""
        key, d = svc.source_from_item(corpus, item_id, steps)
        return {**d, "image": to_data_url(svc.source(key).images[0])}

    def directions_layers() -> list[str]:
        """Blocks whose output can be the edited space ('mid_block' is h-space proper)."""
        return svc.layers()

    def directions_list() -> list[dict]:
        """The direction library: id, name, kind, default strength, judge results when known."""
        return svc.list()

    def directions_discover_pca(n_samples: int = 200, k: int = 10, layer: str = "mid_block",
                                record_half: str = "uncond") -> list[dict]:
        """Unsupervised: top-k PCA directions of h (at `layer`, read from the guidance half `record_half`)
        per timestep over n generated samples."""
        ids = svc.discover_pca(n_samples, k, layer=layer, half=record_half)
        return [svc.get(i).summary() for i in ids]

    def directions_supervised(factor: str, value: str, from_value: str = "", orthogonal_to: list[str] | None = None,
                              labels: str = "truth", layer: str = "mid_block", record_half: str = "uncond") -> dict:
        """Supervised: mean(h | factor=value) − mean(h | others or from_value), optionally ⊥ other directions."""
        return svc.get(svc.supervised(factor, value, from_value, orthogonal_to or [], labels, layer=layer,
                                      half=record_half)).summary()

    def directions_groups(positive: list[int], negative: list[int], name: str = "group A → group B") -> dict:
        """From two groups of h-space corpus items (row indices, e.g. two Atlas selections)."""
        return svc.get(svc.groups(positive, negative, name)).summary()

    def directions_prompt_pair(prompt_a: str, prompt_b: str, n: int = 8) -> dict:
        """h-space direction from a prompt pair: mean h(B) − mean h(A) over n seeds."""
        return svc.get(svc.prompt_pair(prompt_a, prompt_b, n)).summary()

    def directions_text(prompt_a: str, prompt_b: str) -> dict:
        """Text direction: E(B) − E(A) added to the text conditioning (strength 1 = prompt B)."""
        return svc.get(svc.text(prompt_a, prompt_b)).summary()

    def directions_image_specific(source: str, step: int = 2, k: int = 3, region: str = "") -> list[dict]:
        """Top-k right singular vectors of ∂ε/∂h at one step of a source (optionally in a region)."""
        return [svc.get(i).summary() for i in svc.image_specific(source, step, k, region)]

    def directions_edit(source: str, direction_ids: list[str], strengths: list[float], t_start: float = 0.0,
                        t_end: float = 1.0, asymmetric: bool = False, delta_half: str = "both") -> dict:
        """The source edited along directions (strengths in σ) over the fraction [t_start, t_end) of the
        steps, optionally with Asyrp's asymmetric process, Δh in "both" guidance halves or only the
        "cond" one (the guidance scale then multiplies it): {"image": PNG data URL, "ms": server time}."""
        t = time.perf_counter()
        img = svc.edit(source, direction_ids, strengths, t_start, t_end, asymmetric, delta_half)
        ms = (time.perf_counter() - t) * 1000
        return {"image": to_data_url(img), "ms": round(ms, 1)}

    def directions_strip(source: str, direction_id: str, strength: float = 0.0, frames: int = 11,
                         delta_half: str = "both") -> dict:
        """Frames from −strength to +strength (0: the direction's default) and the traversal's ISTD."""
        ss, imgs, ist = svc.strip(source, direction_id, strength or None, frames, delta_half=delta_half)
        return {"strengths": [float(s) for s in ss], "images": [to_data_url(i) for i in imgs], "istd": ist}

    def directions_judge(direction_id: str, n_sources: int = 12, strength: float = 0.0) -> dict:
        """What the judge sees change (per factor), the disentanglement score, a name, ISTD."""
        return svc.judge_direction(direction_id, n_sources, strength or None)

    def directions_map(step: int = 5, x_axis: str = "PCA 1", y_axis: str = "PCA 2", item: int = -1,
                       record_half: str = "uncond") -> dict:
        """The h-space bank on two axes (direction ids or 'PCA k') at a step, with an item's trajectory
        across steps: {"ids", "x", "y", "trajectory": [[x, y], ...] or None, "axes"}."""
        m = svc.map_data(step, x_axis, y_axis, None if item is None or item < 0 else item, half=record_half)
        tr = m["trajectory"]
        return {"ids": [f"h-{i}" for i in range(len(m["xy"]))], "x": m["xy"][:, 0].tolist(), "y": m["xy"][:, 1].tolist(),
                "trajectory": None if tr is None else tr.tolist(), "axes": list(m["titles"])}

    def directions_export(direction_ids: list[str] | None = None) -> FileData:
        """The directions (all when none are named) as .safetensors with JSON metadata."""
        return FileData(path=svc.export(direction_ids or []))

    def directions_import(file: FileData) -> list[dict]:
        """Import a .safetensors directions file (handle_file(path))."""
        return [svc.get(i).summary() for i in svc.import_file(uploaded_path(file))]

    def directions_to_atlas(step: int = 5, n_samples: int = 200, record_half: str = "uncond") -> str:
        """Add the h-space (pooled h at `step`, read from the guidance half `record_half`) of n samples to the
        Atlas; returns its corpus key."""
        return svc.to_atlas(step, n_samples, half=record_half)

    for fn in (directions_layers, directions_source_prompt, directions_source_image, directions_source_item, directions_list,
               directions_discover_pca, directions_supervised, directions_groups, directions_prompt_pair,
               directions_text, directions_image_specific, directions_strip, directions_judge, directions_export,
               directions_import, directions_to_atlas, directions_map):
        gr.api(guard(fn), api_name=fn.__name__, concurrency_id="dir-api")
    gr.api(guard(directions_edit), api_name="directions_edit", concurrency_id="dir-edit", concurrency_limit=2)
