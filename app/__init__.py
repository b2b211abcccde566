"""Latent Atlas UI: Gradio layout and event wiring only; model code lives in `backends`."""
