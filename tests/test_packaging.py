"""pyproject.toml as pip sees it: the pins agree with requirements*.txt; the wheel holds the code, the shipped assets
and the `latent-atlas` command; `latent-atlas --help` stays light; FILE arguments are opened like --data."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def requirements(name: str) -> list[str]:
    """The requirement lines of a requirements file: comments, blank lines and `-r` includes dropped."""
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return [line.replace(" ", "") for line in lines if line and not line.startswith("-")]


def spec(reqs: list[str]) -> list[str]:
    """pyproject requirement strings, spaced as requirements() leaves them."""
    return [r.replace(" ", "") for r in reqs]


def test_dependencies_agree_with_the_requirements_files():
    base, extras = spec(PROJECT["dependencies"]), PROJECT["optional-dependencies"]
    assert not any(r.startswith("faiss") for r in base)  # FAISS comes from exactly one of [cpu] and [gpu]
    assert sorted(base + spec(extras["cpu"])) == sorted(requirements("requirements.txt"))
    assert sorted(base + spec(extras["gpu"])) == sorted(requirements("requirements-gpu.txt"))
    assert sorted(spec(extras["test"])) == sorted(requirements("requirements-test.txt"))
    assert "-r requirements.txt" in (ROOT / "requirements-test.txt").read_text()


def test_package_list_holds_every_package_under_app_and_backends():
    from setuptools import find_packages

    tool = PYPROJECT["tool"]["setuptools"]
    listed = set(tool["packages"])
    code = {p for p in listed if not p.startswith("latent_atlas_assets")}
    assert code == set(find_packages(str(ROOT), include=["app*", "backends*"]))
    assert tool["package-dir"] == {"latent_atlas_assets": "assets"}
    folders = [ROOT / "assets", *(d for d in (ROOT / "assets").rglob("*") if d.is_dir() and d.name != "__pycache__")]
    data = {".".join(["latent_atlas_assets", *d.relative_to(ROOT / "assets").parts]) for d in folders}
    assert listed - code == data  # a new folder under assets/ needs its line in packages and in package-data
    assert all(tool["package-data"].get(name) == ["*"] for name in data)
    assert PROJECT["scripts"] == {"latent-atlas": "app.cli:main"}


def test_wheel_holds_code_assets_and_the_command(tmp_path):
    src, out = tmp_path / "src", tmp_path / "dist"
    src.mkdir()  # a copy, so that the build leaves no build/ or *.egg-info in the checkout
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("app", "backends", "assets"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
                        "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = out.glob("latent_atlas-0.7.0-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = z.read("latent_atlas-0.7.0.dist-info/entry_points.txt").decode()
        metadata = z.read("latent_atlas-0.7.0.dist-info/METADATA").decode()
    assert {"app/cli.py", "backends/registry.py", "backends/paths.py"} <= names
    code = {p.relative_to(src).as_posix() for d in ("app", "backends") for p in (src / d).rglob("*.py")}
    assert code <= names, sorted(code - names)
    shipped = {"latent_atlas_assets/" + p.relative_to(src / "assets").as_posix()
               for p in (src / "assets").rglob("*") if p.is_file()}
    assert "latent_atlas_assets/shapes/generator.safetensors" in shipped and shipped <= names, sorted(shipped - names)
    static = {"app/static/" + p.name for p in (src / "app" / "static").iterdir()}
    assert "app/static/regl-scatterplot.min.js" in static and static <= names, sorted(static - names)
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["app"] == ["static/*"]  # the browser's bundle ships
    assert not any(n.startswith(("tests/", "bench/", "scripts/", "assets/")) for n in names)
    assert "[console_scripts]" in entry_points and "latent-atlas = app.cli:main" in entry_points
    assert "Provides-Extra: gpu" in metadata and "Requires-Python: >=3.10" in metadata


def test_help_lists_the_flags_and_imports_nothing_heavy():
    r = subprocess.run([sys.executable, "-m", "app.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: latent-atlas")
    for flag in ("FILE", "--data PATH", "--host", "--port", "--device", "--cache-dir", "--generator", "--offline"):
        assert flag in r.stdout, flag
    code = ("import sys, app.cli\n"
            "try:\n    app.cli.parse_args(['--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n"
            "print('HEAVY', [m for m in ('torch', 'gradio', 'faiss', 'numpy') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert "HEAVY []" in r.stdout


def test_positional_files_are_added_to_data():
    import launch
    from app.cli import parse_args

    assert parse_args([]).data is None
    assert parse_args(["a.npy", "b.csv"]).data == ["a.npy", "b.csv"]
    a = parse_args(["a.npy", "--data", "b.npy", "--port", "7000", "c.csv", "--data", "d.parquet"])
    assert a.data == ["b.npy", "d.parquet", "a.npy", "c.csv"] and a.port == 7000
    assert launch.parse_args(["x.npy", "--data", "y.npy"]).data == ["y.npy", "x.npy"]


def test_main_opens_positional_files_like_data(monkeypatch, tmp_path):
    """Through main(): each FILE reaches Backends.add_path as --data ones do (app building and launch stubbed)."""
    import app.main
    import backends.registry
    from app import cli

    opened = []

    class FakeBackends:
        def __init__(self, settings):
            self.settings = settings

        def add_path(self, path, *, operator=False):
            assert operator  # the operator's files: the memory budget decides, not the upload limits
            opened.append(path)
            return "upload:" + Path(path).stem

        def model_notes(self):
            return []

        def warm_up(self):
            pass

    class FakeDemo:
        def launch(self, **kwargs):
            opened.append("launched")

    monkeypatch.setattr(backends.registry, "Backends", FakeBackends)
    monkeypatch.setattr(app.main, "create_app", lambda settings, b: FakeDemo())
    monkeypatch.setenv("LATENT_ATLAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cli.main(["a.npy", "--data", "b.npy", "c.csv"])
    assert opened == ["b.npy", "a.npy", "c.csv", "launched"]
