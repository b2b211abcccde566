"""Stitching tab: relative representations and zero-shot model stitching (work in progress)."""
from __future__ import annotations

from backends.registry import Backends


def build_stitching(backends: Backends):
    import gradio as gr

    gr.Markdown("Stitching: compare two latent spaces through relative representations (coming soon).")
    return None
