"""Directions tab: drag an image along discovered h-space directions (work in progress)."""
from __future__ import annotations

from backends.registry import Backends


def build_directions(backends: Backends):
    import gradio as gr

    gr.Markdown("Directions: move an image along h-space directions of the diffusion model (coming soon).")
    return None
