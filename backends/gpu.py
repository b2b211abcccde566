"""GPU helpers for hosting: the optional ``spaces.GPU`` decorator (Hugging Face ZeroGPU Spaces).

On a ZeroGPU Space a GPU is attached only while a function decorated with ``spaces.GPU`` runs;
everywhere else (a laptop, CI, a CPU Space, a dedicated GPU) ``gpu_task`` returns the function
unchanged, so the same code serves all of them.

    @gpu_task(duration=60)
    def generate(...): ...
"""
from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable


def on_zero_gpu() -> bool:
    """True on a Hugging Face ZeroGPU Space (the ``spaces`` package is there and says so)."""
    if os.environ.get("SPACES_ZERO_GPU", "").lower() not in ("1", "true"):
        return False
    return importlib.util.find_spec("spaces") is not None


def gpu_task(duration: int = 60) -> Callable[[Callable], Callable]:
    """Decorate GPU work with ``spaces.GPU(duration=...)`` on ZeroGPU; a no-op elsewhere."""

    def wrap(fn: Callable) -> Callable:
        if not on_zero_gpu():
            return fn
        import spaces

        return functools.wraps(fn)(spaces.GPU(duration=duration)(fn))

    return wrap


__all__ = ["gpu_task", "on_zero_gpu"]
