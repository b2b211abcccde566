"""Where the shipped data lives: the repository's assets/ in a source checkout, else the copy installed with the package.

A checkout (and a Hugging Face Space, which runs launch.py from one) uses the repository's assets/ folder, the one
the trainers write to. `pip install latent-atlas` installs that same folder as the package `latent_atlas_assets`
(pyproject.toml maps it with [tool.setuptools.package-dir]); it has no __init__.py, so it is found by its import
spec (importlib.resources.files cannot open namespace packages before Python 3.12).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def assets_dir() -> Path:
    """The folder holding shapes/ (the Shapes models' weights and configs) and any other shipped data."""
    if (REPO / "launch.py").is_file() and (REPO / "assets").is_dir():  # a source checkout
        return REPO / "assets"
    spec = importlib.util.find_spec("latent_atlas_assets")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return REPO / "assets"  # neither: the loaders report the missing weights as in a checkout without them
