"""What the Directions tab does: drag an image along h-space directions of the diffusion model.

``DirectionsService`` takes small keys and returns values (images as uint8 arrays, summaries as
dicts); app/tabs/directions.py lays it out and wires it to Gradio. Sources (cached trajectories:
latents, noise and h of every step) and directions live in the service, shared by all users, so
each slider move costs one edited denoising pass.

Uploaded images are converted to RGB (transparent pixels composited over black, grey repeated),
centre-cropped to a square and resized to the model's resolution (32×32 for the shipped Shapes generator); images
above 40 megapixels are refused.

Long actions take ``progress``: a callable ``progress(fraction, text)`` (or None).
"""
from __future__ import annotations

import base64
import io
import math
import tempfile
import threading
from collections import OrderedDict

import numpy as np

from backends.errors import InputError, number_between, whole_number
from backends.gpu import gpu_task
from backends.registry import Backends

MAX_PIXELS = 40_000_000
MAX_SOURCES = 32
MAX_DIRECTIONS = 256
# the direction library table (judge results, when known, fill the last three)
SLIDER_RANGE = 10.0  # ± σ on an h-space direction's slider (the API accepts up to directions.MAX_STRENGTH)
LIBRARY_COLUMNS = ("id", "name", "kind", "default_strength", "disentanglement", "dominant", "istd")
JUDGE_COLUMNS = ("disentanglement", "dominant", "istd")  # filled by judge_direction
JUDGE_PENDING = "run Judge"  # what those cells say until the direction is judged
# the disentanglement table (backends/generative/disentanglement.py: what each score means)
DISENTANGLEMENT_COLUMNS = ("family", "directions", "MIG", "DCI disentanglement", "DCI completeness",
                           "DCI informativeness", "InfoM", "InfoE", "InfoC")
SCORE_COLUMNS = dict(zip(("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "infom", "infoe",
                          "infoc"), DISENTANGLEMENT_COLUMNS[2:]))
SHAPES_FACTORS = ("shape", "colour", "size", "position")
POSITIONS3 = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")


def _record_half(half) -> str:
    from backends.generative.hspace import check_record_half

    return check_record_half(half or "uncond")


def _edit_half(half) -> str:
    from backends.generative.hspace import check_edit_half

    return check_edit_half(half or "both")


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def half_defaults(backends: Backends) -> tuple[str, str]:
    """The tab's starting (record half, Δh half): the Shapes generator's config says which suits it
    (no weights loaded); other generators start at Haas et al.'s ("uncond", "both")."""
    from backends.generative.hspace import EDIT_HALVES, RECORD_HALVES

    record, delta = "uncond", "both"
    d = backends.generator_defaults()
    record = d.get("directions_record_half") if d.get("directions_record_half") in RECORD_HALVES else record
    delta = d.get("directions_delta_half") if d.get("directions_delta_half") in EDIT_HALVES else delta
    return record, delta


def supervised_note(backends: Backends, factor: str) -> str:
    """What the Supervised section's direction for `factor` did on the active generator, measured with the
    tab's defaults (backends/shapes/supervised_eval.py --record); a factor whose direction rarely reaches
    its target says so. Empty where nothing was measured."""
    scores = backends.generator_defaults().get("supervised_directions") or {}
    lines = []
    for name, r in scores.items():
        if name.split(" → ")[0] != factor:
            continue
        line = (f"Measured on this model with the tab's defaults: **{name}** at its default strength "
                f"({r['strength']:g}σ) brings {r['reached']:.0%} of the sources there and keeps their other "
                f"factors on {r['others_kept']:.0%}.")
        if r["reached"] < 0.5:
            line = f"**A {factor} direction in h rarely changes the {factor} on this model**: change it in the prompt. " + line
        lines.append(line)
    return "\n\n".join(lines)


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


def parse_sample_ids(text: str, name: str) -> list[int]:
    """'h-3, h-17' (or '3; 17') -> [3, 17]: the rows of h-space samples named by their map ids."""
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


class DirectionsService:
    """What the Directions tab (and its API) does, independent of the layout."""

    def __init__(self, backends: Backends, pipe=None, judge=None):
        self.b = backends
        self._pipe = pipe if pipe is not None else getattr(backends, "directions_pipe", None)
        self._judge = judge if judge is not None else getattr(backends, "directions_judge", None)
        self._sources: OrderedDict = OrderedDict()
        self._dirs: OrderedDict = OrderedDict()
        self._lock = threading.RLock()
        from backends.generative.hspace_corpus import DEFAULT_SAMPLES  # one bank for this tab and the hspace corpus

        self.n_bank = int(getattr(backends, "directions_bank_size", 0) or DEFAULT_SAMPLES)

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

        if progress is not None:  # the first call loads the generator and the judge (seconds) before sampling
            progress(0.0, "loading the generator")
        pipe, judge = self.pipe, self.judge
        return shapes_bank(pipe, n or self.n_bank, cache=self.b.cache, judge=judge, progress=progress,
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

    _int = staticmethod(whole_number)
    _float = staticmethod(number_between)

    def _guidance(self, g) -> float | None:
        if g is None or (isinstance(g, (int, float)) and g < 0):
            return None
        return self._float(g, "guidance_scale", 0, 30)

    @gpu_task(duration=60)
    def source_from_prompt(self, prompt: str, seed=0, steps=10, eta=1.0, guidance_scale=None,
                           layer: str | None = None) -> tuple[str, dict]:
        from backends.cache import content_key
        from backends.generative import hspace as hspace

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
        from backends.cache import content_key
        from backends.generative import hspace as hspace

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

    def source_from_sample(self, item, steps=10, layer: str | None = None, half: str | None = None) -> tuple[str, dict]:
        """Sample `item` of the h-space bank (a point on the h-space map), regenerated from its prompt and seed."""
        bank = self.bank(layer=layer, half=half)
        item = self._int(item, "item", 0, len(bank) - 1)
        return self.source_from_prompt(bank.prompts[item], bank.seeds[item], steps, layer=layer)

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

    def slider(self, did: str | None) -> dict:
        """The strength slider for a direction: h-space ones move h by σ (±SLIDER_RANGE σ); a text
        direction (prompt pair, text, NoiseCLR) adds its shift of the conditioning, where 1 is the whole
        shift and ±10 wrecks the image, so its slider spans ± twice its default strength."""
        if not did:
            return {"range": SLIDER_RANGE, "step": 0.1, "label": "strength (σ)"}
        d = self.get(did)
        if d.kind != "text":
            return {"range": SLIDER_RANGE, "step": 0.1, "label": "strength (σ)"}
        return {"range": round(2.0 * max(float(d.default_strength), 0.05), 2), "step": 0.02,
                "label": "strength (× its text shift)"}

    def list(self) -> list[dict]:
        with self._lock:
            return [d.summary() for d in self._dirs.values()]

    def choices(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(f"{d.name} [{d.id}]", d.id) for d in self._dirs.values()]

    def library_table(self):
        """The library as a DataFrame with LIBRARY_COLUMNS. The judge's columns (disentanglement,
        dominant factor, ISTD) are filled by Judge, which renders a few dozen edited images per
        direction (about 40 s on a 2-core CPU), so a direction is not judged as it is added: until
        then its cells say "run Judge" (and stay blank where there is no judge to run)."""
        import pandas as pd

        cols = list(LIBRARY_COLUMNS)
        rows = self.list()
        pending = JUDGE_PENDING if rows and self.judge is not None else ""
        out = []
        for r in rows:
            row = {c: r.get(c, "") for c in cols}
            if r.get("kind") == "text":  # its strength is in units of its text shift, not of σ in h
                row["default_strength"] = f"{r.get('default_strength', 1)} (× text shift)"
            judged = "dominant" in r
            for c in JUDGE_COLUMNS:
                if not judged:
                    row[c] = pending
                elif c == "istd" and not _finite(r.get("istd")):  # text directions have no traversal to measure
                    row[c] = "n/a (text direction)" if r.get("kind") == "text" else "n/a"
            out.append(row)
        return pd.DataFrame(out, columns=cols)

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
                   n_samples=None, layer: str | None = None, half: str | None = None, progress=None) -> str:
        from backends.generative import directions as D

        if labels not in ("truth", "judge"):
            raise InputError(f"labels has to be 'truth' or 'judge', but is {labels!r}")
        half = _record_half(half)
        bank = self.bank(self._int(n_samples or self.n_bank, "n_samples", 8, 5000), progress, layer=layer, half=half)
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

    def edit_check(self):
        """The generator's world's check for broken edited frames, or None."""
        get = getattr(self.b, "edit_check", None)
        return get() if callable(get) else None

    @gpu_task(duration=60)
    def strip(self, source: str, did: str, strength=None, frames=11, t_start=0.0, t_end=1.0, delta_half: str = "both"):
        """Frames from −s to +s along a direction, their ISTD, and how s was chosen: without a strength,
        s is read off this image's change curve (backends.generative.change_curve: the first clear
        change, kept below the first broken frame), returned as a dict (None when s was given)."""
        from backends.generative import directions as D
        from backends.generative.change_curve import change_curve

        traj = self.source(source)
        d = self.get(did)
        frames = self._int(frames, "frames", 3, 21)
        t0, t1 = self._float(t_start, "t_start", 0, 1), self._float(t_end, "t_end", 0, 1)
        if t0 >= t1:
            raise InputError(f"t_start ({t0:g}) has to be below t_end ({t1:g})")
        half = _edit_half(delta_half)
        chosen = None
        if strength in (None, "", 0):
            curve = change_curve(self.pipe, traj, d, broken=self.edit_check(), t_range=(t0, t1), delta_half=half)
            s, chosen = curve.range, curve.summary()
        else:
            s = D.check_strength(strength)
        ss, imgs = D.traversal(self.pipe, traj, d, strength=s, frames=frames, t_range=(t0, t1), delta_half=half)
        return ss, imgs, D.istd(imgs), chosen

    def judge_direction(self, did: str, n_sources=12, strength=None, progress=None) -> dict:
        from backends.generative import directions as D
        from backends.generative import hspace as hspace

        judge = self.judge
        if judge is None:
            raise InputError("there is no judge (assets/shapes/judge.safetensors) to read what changes")
        d = self.get(did)
        n = self._int(n_sources, "n_sources", 1, 64)
        tell = progress or (lambda fraction, text: None)
        tell(0.0, f"rendering {n} sources")
        prompts, _ = D.shapes_prompts(n, seed=7)
        src = hspace.generate(self.pipe, prompts, seeds=1000, steps=10)
        s = None if strength in (None, "") else D.check_strength(strength)
        rep = D.judge_direction(self.pipe, d, src, judge, strength=s, istd_samples=2,
                                progress=lambda f, text: tell(0.2 + 0.8 * f, text))
        d.meta.update({"judged_name": rep["name"], "disentanglement": round(rep["disentanglement"], 3),
                       "dominant": rep["dominant"], "istd": round(rep.get("istd", float("nan")), 4),
                       "changes": {k: round(v, 3) for k, v in rep["changes"].items()}})
        if d.kind == "pca" and rep["name"] != "no visible change":
            d.name = f"{rep['name']} (PC {d.meta.get('component', '?')})"
        return rep

    def noiseclr(self, k=10, steps=150, batch_size=4, n_samples=None, temperature=0.5, seed=0, corpus: str = "",
                 progress=None) -> list[str]:
        """NoiseCLR (backends/generative/noiseclr.py): k directions in the text conditioning learned
        without labels from unlabelled images, the bank's generated samples (n_samples of them) or an
        Atlas corpus's images (its first n_samples); added to the library as text directions
        "NoiseCLR 1..k" (ids noiseclr-1.., or noiseclr-s<seed>-.. for another seed)."""
        from backends.generative import noiseclr as NC

        k, steps, batch_size, temperature, _ = NC.check_settings(k, steps, batch_size, temperature, 0.2)
        n = self._int(n_samples or self.n_bank, "n_samples", batch_size, 5000)
        seed = self._int(seed, "seed", 0, 2 ** 31 - 1)
        tell = progress or (lambda fraction, text: None)
        corpus = (corpus or "").strip()
        if corpus:
            c = self.b.corpus(corpus)
            if c.images is None:
                raise InputError(f"corpus {corpus!r} has no images to learn from")
            images, source = np.asarray(c.images[:n]), f"corpus {corpus}"
        else:
            images = self.bank(n, lambda f, m: tell(0.2 * f, m), half=half_defaults(self.b)[0]).images
            source = "generated samples"
        if images is None or len(images) < batch_size:
            raise InputError(f"NoiseCLR needs at least batch_size={batch_size} images, but has "
                             f"{0 if images is None else len(images)}")
        res = NC.train_noiseclr(self.pipe, images, k=k, steps=steps, batch_size=batch_size, temperature=temperature,
                                seed=seed, progress=lambda f, m: tell(0.2 + 0.8 * f, m))
        dirs = NC.to_directions(self.pipe, res, prefix="noiseclr" if seed == 0 else f"noiseclr-s{seed}")
        for d in dirs:
            d.meta["images"] = source
        return [self.add(d) for d in dirs]

    # -- disentanglement of the library's direction families ---------------------------------
    def disentanglement(self, step=None, n_samples=None, layer=None, half=None, progress=None):
        """How disentangled each family (kind) of directions in the library is: MIG, DCI and InfoMEC
        (backends/generative/disentanglement.py) of the bank's coordinates along the family's directions
        at `step` (default: the middle step) against the Shapes factors the prompts asked for, plus rows
        "PCA of h (top K)" as a baseline (K: each family's size, 10 when all families are single).

        h is read from the guidance half `half` (default: the half most of the directions were made
        from; "uncond" when they do not say). Text directions (not in h) and directions of another
        layer are left out and named in ``table.attrs["note"]``, which also says how often the judge
        reads the asked-for factor. Scores are rounded to 3 decimals."""
        import pandas as pd

        from backends.generative import directions as D
        from backends.generative import disentanglement as dis
        from backends.generative.hspace_corpus import direction_axis

        with self._lock:
            dirs = list(self._dirs.values())
        if not dirs:
            raise InputError("the direction library is empty: discover PCA directions or add supervised ones first")
        n = self._int(n_samples or self.n_bank, "n_samples", 8, 5000)
        layer = self._layer(layer)
        if not half:
            halves = [d.meta.get("record_half") for d in dirs if d.meta.get("record_half") in ("uncond", "cond")]
            half = max(("uncond", "cond"), key=halves.count) if halves else "uncond"
        half = _record_half(half)
        bank = self.bank(n, progress, layer, half)
        T = bank.h.shape[1]
        middle = step is None or (isinstance(step, (int, float)) and _finite(step) and step < 0)
        step = T // 2 if middle else self._int(step, "step", 0, T - 1)
        if bank.factors is None:
            raise InputError("this bank has no known factors to score directions against")
        cols = [c for c in SHAPES_FACTORS if c in bank.factors.columns] or list(bank.factors.columns)
        factors = bank.factors[cols]
        notes, families = [], {}
        for d in dirs:
            if d.kind == "text" and d.meta.get("method") == "noiseclr" and bank.images is not None:
                families.setdefault("noiseclr", []).append(d)  # scored through their footprint in h
            elif d.kind == "text":
                notes.append(f"{d.id} (a text direction, not in h)")
            elif D.layer_of(d) != layer or d.dim != bank.h.shape[-1]:
                notes.append(f"{d.id} (made at {D.layer_of(d)}, not {layer})")
            else:
                families.setdefault(d.kind, []).append(d)
        if not families:
            raise InputError(f"no direction in the library lives in h at {layer}: "
                             + ", ".join(notes[:10]) + " cannot be scored")
        order = sorted(families, key=lambda k: D.KINDS.index(k) if k in D.KINDS else len(D.KINDS))
        if "noiseclr" in families:
            note_nc = ("; noiseclr: each direction's footprint in h (the mean change of h it causes on the bank's "
                       "images noised to that step)")
        else:
            note_nc = ""
        rows = []

        def row(family: str, count: int, z) -> dict:
            s = dis.scores(z, factors)
            return {"family": family, "directions": count, **{SCORE_COLUMNS[k]: round(float(v), 3) for k, v in s.items()}}

        for i, kind in enumerate(order):
            ds = families[kind]
            if progress is not None:
                progress(i / (len(order) + 1), f"scoring the {kind} directions")
            z = (np.stack([direction_axis(bank, d, step) for d in ds], 1) if kind != "noiseclr"
                 else self._noiseclr_axes(bank, ds, step, layer))
            rows.append(row(kind if len(ds) > 1 else f"{kind} (one: {ds[0].name})", len(ds), z))
        sizes = sorted({min(len(v), 50) for v in families.values() if len(v) > 1}) or [10]
        h = bank.h[:, step].astype(np.float64)
        for k in sizes:
            comps, std, mean = D.pca(h, k)
            z = (h - mean) @ comps.T.astype(np.float64) / np.where(std > 0, std, 1.0)
            rows.append(row(f"PCA of h (top {len(comps)})", len(comps), z))
        table = pd.DataFrame(rows, columns=list(DISENTANGLEMENT_COLUMNS))
        note = (f"{len(bank)} samples, h at {layer} from the {half} half at step {step} of {T}; factors asked for: "
                f"{', '.join(cols)}")
        note += note_nc
        if bank.judged is not None:
            agree = [f"{c} {np.mean(bank.judged[c].astype(str).to_numpy() == factors[c].astype(str).to_numpy()):.0%}"
                     for c in cols if c in bank.judged.columns]
            if agree:
                note += f". The judge reads the asked-for factor on: {', '.join(agree)} of the samples"
        if notes:
            note += ". Left out: " + ", ".join(notes[:10]) + (f" and {len(notes) - 10} more" if len(notes) > 10 else "")
        table.attrs["note"] = note
        return table

    def _noiseclr_axes(self, bank, dirs, step: int, layer: str) -> np.ndarray:
        """The bank's coordinates (N, K) along the h-space footprints of NoiseCLR (text) directions."""
        from backends.generative import noiseclr as NC

        v = NC.induced_h_directions(self.pipe, dirs, bank.images, int(bank.timesteps[step]), layer=layer)
        h = bank.h[:, step].astype(np.float64)
        z = (h - h.mean(0)) @ v.T.astype(np.float64)
        sd = z.std(0, ddof=1)
        return (z / np.where(sd > 0, sd, 1.0)).astype(np.float32)

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

    def to_atlas(self, step=5, n_samples=None, layer=None, half=None, progress=None) -> str:
        from backends.generative.hspace_corpus import bank_corpus

        bank = self.bank(self._int(n_samples or self.n_bank, "n_samples", 8, 5000), progress, layer=layer, half=half)
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
