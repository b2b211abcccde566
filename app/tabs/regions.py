"""Regions tab: paint regions, give each a prompt, generate (SpaText / MultiDiffusion). Work in progress."""
from __future__ import annotations

from backends.registry import Backends


def build_regions(backends: Backends):
    import gradio as gr

    gr.Markdown("Regions: paint regions and give each its own prompt (coming soon).")
    return None
