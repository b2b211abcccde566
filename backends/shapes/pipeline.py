"""The bundled Shapes generator as a ``LatentDiffusionPipeline`` (with its autoguidance guide)."""
from __future__ import annotations

import threading

from backends.generative.pipeline import LatentDiffusionPipeline

_PIPES: dict = {}
_PIPE_LOCK = threading.Lock()


def load_shapes_pipeline(device: str = "cpu", path=None) -> LatentDiffusionPipeline:
    """The bundled Shapes generator as a pipeline (loaded on first use, then cached)."""
    from backends.shapes.generator import guide_path, load_generator
    from backends.shapes.text import get_text_encoder

    key = (str(device), str(path))
    with _PIPE_LOCK:
        if key not in _PIPES:
            gen = load_generator(path, device=device)
            guide = guide_path(path)
            guide_unet = None
            if guide is not None:
                g = load_generator(guide, device=device)
                fields = ("image_size", "patch", "spatext_channels", "text_dim", "max_tokens", "prediction_type",
                          "num_train_timesteps", "beta_schedule")
                bad = [f for f in fields if getattr(g.config, f) != getattr(gen.config, f)]
                if bad:
                    raise ValueError(f"the guide model {guide.name} does not fit the generator: "
                                     f"{', '.join(bad)} differ")
                guide_unet = g.unet
            method = gen.config.guidance_method if guide_unet is not None else "cfg"
            _PIPES[key] = LatentDiffusionPipeline(
                gen.unet, gen.make_scheduler(), gen.codec, get_text_encoder(device), gen.spatext,
                max_tokens=gen.config.max_tokens, default_guidance_scale=gen.config.guidance_scale,
                default_steps=gen.config.num_inference_steps, default_eta=gen.config.eta,
                default_region_guidance_scale=gen.config.region_guidance_scale, guide_unet=guide_unet,
                default_guidance_method=method)
        return _PIPES[key]



__all__ = ["load_shapes_pipeline"]
