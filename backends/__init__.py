"""Latent Atlas backends: numpy / torch / faiss code with no gradio imports.

Importing this package is cheap: heavy libraries are imported inside functions.
"""
