"""What the Regions tab does: parse a canvas painted in palette colours, generate from it.

``RegionsService`` takes RGBA canvases (uint8 arrays) and {colour: prompt} and returns parsed
regions and images; app/tabs/regions.py holds the painting canvas, the layout and the wiring.

Methods: SpaText (the Shapes model's trained spatio-textual channels), MultiDiffusion
(training-free, any pipeline), paint-with-words (cross-attention masking), or "compare" (all of
them, same seed).
"""
from __future__ import annotations

import os

import numpy as np

from backends.errors import InputError
from backends.generative import regions as R
from backends.gpu import gpu_task
from backends.registry import Backends

METHOD_LABELS = {"spatext": "SpaText", "multidiffusion": "MultiDiffusion", "paint_with_words": "Paint-with-words",
                 "compare": "Compare all (same seed)"}
MAX_STEPS = 100
MAX_CANVAS_PIXELS = 4096 * 4096  # uploaded canvases above this are refused
EXAMPLE = {  # a ready layout: (colour, box (x0, y0, x1, y1) in canvas pixels, prompt)
    "regions": [("red", (40, 40, 230, 230), "a red circle"), ("blue", (290, 270, 480, 470), "a blue star")],
    "prompt": "on a black background",
}


def _blank_canvas(size: int = R.CANVAS_SIZE) -> np.ndarray:
    return np.full((size, size, 4), 255, np.uint8)


def example_canvas() -> np.ndarray:
    c = _blank_canvas()
    for colour, (x0, y0, x1, y1), _ in EXAMPLE["regions"]:
        yy, xx = np.mgrid[:R.CANVAS_SIZE, :R.CANVAS_SIZE]
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        c[np.hypot(xx - cx, yy - cy) <= r, :3] = R.PALETTE[colour]
    return c


def read_canvas(path) -> np.ndarray:
    """An image file (a painted layout) as RGBA uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_CANVAS_PIXELS:
                raise InputError(f"canvas: image is {im.width}x{im.height}, larger than 4096x4096")
            return np.asarray(im.convert("RGBA"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"canvas: not a readable image ({type(exc).__name__})") from None


def canvas_from_upload(img: np.ndarray, size: int = R.CANVAS_SIZE) -> np.ndarray:
    """An uploaded layout (RGBA, any size) as the canvas shows it: size x size, nearest-neighbour
    (so palette colours stay exact), transparent pixels white."""
    from PIL import Image

    img = np.asarray(img, np.uint8)
    if img.shape[:2] != (size, size):
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.NEAREST))
    out = img.copy()
    clear = out[..., 3] < 128
    out[clear] = 255
    out[..., 3] = 255
    return out


def default_guidance(backends, method: str) -> float:
    """The slider's first value: the Shapes model's region-map guidance for SpaText (measured best,
    README), else the generator's own default. Read from configs, no weights loaded."""
    d = backends.generator_defaults()
    return float(d["region_guidance_scale"] if method == "spatext" else d["guidance_scale"])


def method_note(backends, method: str, planned: bool = False) -> str:
    """What a region method does on the active generator, measured on user-like painted layouts
    (regions_eval --record), with the object planner when `planned` (scores recorded as
    "<method>+plan"): a method that does not follow painted areas here says so."""
    scores = backends.generator_defaults().get("region_methods") or {}
    names = [m for m in ("spatext", "multidiffusion", "paint_with_words") if method in (m, "compare")]
    lines = []
    for m in names:
        r = scores.get(m + "+plan") if planned else scores.get(m)
        if not r:
            continue
        how = " with the object planner" if planned else ""
        line = (f"{METHOD_LABELS[m]}{how} on this model (user-like painted areas, measured): the object lands "
                f"inside its area {r['inside']:.0%} of the time, its shape and colour right {r['both']:.0%}.")
        if r["inside"] < 0.5:
            line = f"**{METHOD_LABELS[m]}{how} does not follow painted areas on this model.** " + line
        lines.append(line)
    return "\n\n".join(lines)


class RegionsService:
    """What the Regions tab (and its API) does, independent of the layout."""

    def __init__(self, backends: Backends, model: str | None = None):
        self.b = backends
        self.model = model or os.environ.get("LATENT_ATLAS_REGIONS_MODEL", "shapes")

    def pipeline(self, model: str | None = None):
        name = model or self.model
        spec = getattr(self.b, "generator_spec", None)
        if name == "shapes" and spec is not None and spec().kind != "shapes":
            return self.b.generator_pipeline()  # --generator: regions by MultiDiffusion / paint-with-words
        device = self.b.device if hasattr(self.b, "device") else "cpu"
        return R.get_pipeline(name, device=device)

    def parse(self, canvas: np.ndarray | None, min_area_frac: float = R.MIN_AREA_FRAC) -> R.ParsedCanvas:
        if canvas is None:
            raise InputError("canvas: nothing was painted (the canvas is empty)")
        if not 0.0 <= float(min_area_frac) <= 0.5:
            raise InputError(f"min_area_frac must be between 0 and 0.5, but is {min_area_frac}")
        return R.parse_canvas(canvas, min_area_frac=float(min_area_frac))

    @staticmethod
    def summary(parsed: R.ParsedCanvas) -> dict:
        return {"regions": [{"colour": c, "hex": R.hex_colour(c), "area": round(parsed.areas[c], 4)}
                            for c in parsed.present],
                "notes": list(parsed.notes)}

    @gpu_task(duration=90)
    def generate(self, canvas: np.ndarray | None, prompts: dict, global_prompt: str = "", method: str = "spatext",
                 seed: int = 0, steps: int = 20, guidance: float | None = None, bootstrap_steps: int | None = None,
                 pww_weight: float = 0.4, model: str | None = None,
                 plan_objects: bool = True) -> tuple[R.RegionResult, R.ParsedCanvas]:
        """guidance None (or < 0): the model's default (for the Shapes model with a SpaText map, its
        measured region-map guidance). plan_objects: where the model's world has an object planner,
        each painted area is first turned into the shape its prompt names, fitted inside it."""
        steps = int(steps)
        if not 1 <= steps <= MAX_STEPS:
            raise InputError(f"steps must be between 1 and {MAX_STEPS}, but is {steps}")
        if bootstrap_steps is not None and int(bootstrap_steps) < 0:
            bootstrap_steps = None  # -1: the default (20% of the steps)
        if bootstrap_steps is not None and int(bootstrap_steps) > steps:
            raise InputError(f"bootstrap_steps must be between 0 and steps ({steps}), but is {bootstrap_steps}")
        if not isinstance(global_prompt, str):
            raise InputError(f"global_prompt must be text, but is {type(global_prompt).__name__}")
        if not isinstance(plan_objects, (bool, np.bool_)):
            raise InputError(f"plan_objects must be true or false, but is {plan_objects!r}")
        parsed = self.parse(canvas)
        R.match_prompts(parsed, prompts or {})  # validate before loading a model
        pipe = self.pipeline(model)
        spec = R.match_prompts(parsed, prompts or {}, size=int(pipe.latent_size * _image_per_latent(pipe)))
        res = R.generate(pipe, spec, global_prompt, method=method, seed=int(seed), num_inference_steps=steps,
                         guidance_scale=None if guidance is None or float(guidance) < 0 else float(guidance),
                         bootstrap_steps=None if bootstrap_steps is None else int(bootstrap_steps),
                         pww_weight=float(pww_weight), planner=self.planner(model) if plan_objects else None)
        return res, parsed

    def planner(self, model: str | None = None):
        """The object planner for `model` (None: the model has none, and areas are used as painted)."""
        return self.b.region_planner(model or self.model)


def _image_per_latent(pipe) -> int:
    return int(getattr(pipe.codec.config, "patch", 0) or getattr(pipe, "vae_scale_factor", 8))


MAX_DATA_URL = 8 * 1024 * 1024


def decode_data_url(data: str) -> np.ndarray | None:
    """A PNG data URL from the canvas -> RGBA uint8 (None for an empty value)."""
    import base64
    import io

    from PIL import Image, UnidentifiedImageError

    if not data:
        return None
    if not isinstance(data, str) or not data.startswith("data:image/") or "," not in data:
        raise InputError("canvas: expected a PNG data URL from the canvas")
    if len(data) > MAX_DATA_URL:
        raise InputError(f"canvas: image data is {len(data):,} bytes, more than {MAX_DATA_URL:,}")
    try:
        raw = base64.b64decode(data.split(",", 1)[1], validate=False)
        with Image.open(io.BytesIO(raw)) as im:
            if im.width * im.height > MAX_CANVAS_PIXELS:
                raise InputError(f"canvas: image is {im.width}x{im.height}, larger than 4096x4096")
            return np.asarray(im.convert("RGBA"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"canvas: not a readable image ({type(exc).__name__})") from None


def encode_data_url(img: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
