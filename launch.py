"""Latent Atlas: `python launch.py [FILE ...] [--host H] [--port P] [--data PATH] ...` starts the app.

The same as the installed `latent-atlas` command (app/cli.py holds the flags and main()); this file stays for
Hugging Face Spaces (README front matter: app_file) and for running from a checkout. `--help` answers without
importing torch, gradio or any model code.
"""
from __future__ import annotations

import argparse

from app import cli

PROG = "launch.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return cli.parse_args(argv, prog=PROG)


def main(argv: list[str] | None = None) -> None:
    cli.main(argv, prog=PROG)


if __name__ == "__main__":
    main()
