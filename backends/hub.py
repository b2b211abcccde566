"""Hugging Face Hub access that honours HF_HUB_OFFLINE as set *now*.

huggingface_hub reads HF_HUB_OFFLINE once, when it is imported; code that loads models later
(after a test or the launcher changed the variable) wraps the load in ``hub_offline_now()``.
"""
from __future__ import annotations

import contextlib
import os


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE as set now (huggingface_hub reads them only at import)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@contextlib.contextmanager
def hub_offline_now():
    """While loading, make huggingface_hub offline if HF_HUB_OFFLINE is set now.

    huggingface_hub reads HF_HUB_OFFLINE once, at import; imported earlier, it would still try the network
    (even a local_files_only download builds headers by fetching a registry from the Hub). Setting its
    flag for the duration of the load makes every library under open_clip (transformers too) stay local.
    """
    if not hub_offline():
        yield
        return
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


__all__ = ["hub_offline", "hub_offline_now"]
