"""Files the app hands to browsers and API clients, and files they hand to it."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from backends.errors import InputError


def gradio_temp_dir() -> Path:
    """Gradio's own file cache (uploads land here; files here are served to clients)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def served_dir(prefix: str) -> Path:
    """A fresh folder whose files Gradio serves, also when returned inside a tuple from gr.api."""
    root = gradio_temp_dir()
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def uploaded_path(file, what: str = "file") -> str:
    """The server-side path of an upload (FileData, its dict or a path), refusing paths outside
    Gradio's upload folder; `what` names the argument in messages."""
    path = file.get("path") if isinstance(file, dict) else getattr(file, "path", file)
    if not path:
        raise InputError(f"{what}: nothing was uploaded")
    if not isinstance(path, (str, os.PathLike)) or "\x00" in str(path):
        raise InputError(f"{what}: expected an uploaded file, but got {type(path).__name__} {str(path)[:60]!r}")
    resolved = Path(path).resolve()
    if gradio_temp_dir() not in resolved.parents:
        raise InputError(f"{what}: only files uploaded to this server can be opened")
    return str(resolved)
