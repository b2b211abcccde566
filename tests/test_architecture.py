"""The layout's rules, checked on the source: dependencies point one way.

- Generic code never imports the embedded Shapes world (backends/shapes/); it reaches it through
  the plug-in registries (backends/plugins.py is the one module that names it, as the default).
- The app (Gradio layout and wiring) reaches models only through ``Backends``: no imports of a
  world's modules or of the model-loading modules.
- backends/ never imports gradio or app/.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Modules that load models: the app gets models from Backends instead.
MODEL_MODULES = ("backends.shapes", "backends.plugins", "backends.generative.sd", "backends.representations.encoders")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, relative imports resolved, plus string constants
    that name a backends.shapes module (importlib.import_module("backends.shapes.x"))."""
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("backends.shapes"):
            out.append((node.lineno, node.value))
    return out


def _files(folder: str):
    return sorted((REPO / folder).rglob("*.py"))


def _violations(files, bad, allowed=()) -> list[str]:
    out = []
    for f in files:
        rel = str(f.relative_to(REPO))
        if rel in allowed:
            continue
        for line, mod in _imports(f):
            if any(mod == b or mod.startswith(b + ".") for b in bad):
                out.append(f"{rel}:{line} imports {mod}")
    return out


def test_generic_backends_never_import_the_shapes_world():
    generic = [f for f in _files("backends") if "shapes" not in f.relative_to(REPO / "backends").parts]
    assert len(generic) > 20
    v = _violations(generic, ("backends.shapes",), allowed=("backends/plugins.py",))
    assert not v, "generic code must reach the Shapes world through backends.plugins:\n" + "\n".join(v)


def test_only_the_plugin_registry_names_the_default_world():
    from backends import plugins

    assert plugins.BUILTIN_PLUGINS == ("backends.shapes.plugin",)
    assert _imports(REPO / "backends" / "plugins.py")  # it does name it, as a string


def test_the_app_reaches_models_only_through_backends():
    v = _violations(_files("app"), MODEL_MODULES)
    assert not v, "app/ must get models from Backends:\n" + "\n".join(v)


def test_backends_never_import_gradio_or_the_app():
    v = _violations(_files("backends"), ("gradio", "app"))
    assert not v, "\n".join(v)


def test_the_checker_sees_violations(tmp_path):
    """The rules above would fail on an offending import (the check can fail)."""
    bad = REPO / "backends" / "generative" / "_probe_for_test.py"
    bad.write_text("from backends.shapes import scenes\nimport importlib\nimportlib.import_module('backends.shapes.judge')\n")
    try:
        v = _violations([bad], ("backends.shapes",))
        assert len(v) == 3  # the from-import, its name, and the string
    finally:
        bad.unlink()


def test_every_domain_folder_is_a_package_with_a_docstring():
    for name in ("corpora", "generative", "representations", "clusters", "shapes"):
        init = REPO / "backends" / name / "__init__.py"
        assert init.exists(), name
        assert ast.get_docstring(ast.parse(init.read_text())), f"backends/{name}/__init__.py says what it holds"


def test_plugins_resolve_the_shapes_world():
    from backends import plugins

    assert "shapes" in plugins.GENERATORS.names()
    assert "shapes-cnn" in plugins.get_encoder_family("shapes").names()
    d = plugins.get_generator("shapes").defaults()
    assert {"steps", "guidance_scale", "region_guidance_scale", "guidance_methods"} <= set(d)
    prompts, factors = plugins.get_prompt_set("shapes")(5, seed=0)
    assert len(prompts) == 5 and list(factors.columns)[:2] == ["shape", "colour"]
    assert any(c.text == "red shapes" for c in plugins.get_vocabulary("shapes")())


def test_unknown_plugin_names_get_a_message():
    import pytest

    from backends import plugins
    from backends.errors import InputError

    with pytest.raises(InputError, match="Unknown generator: 'nope'. Must be one of: .*shapes"):
        plugins.get_generator("nope")
