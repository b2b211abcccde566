"""The Regions tab tells a user which methods follow painted areas on the active model."""
import json

from backends.registry import Backends


def test_a_method_that_does_not_follow_painted_areas_says_so(monkeypatch):
    from app.tabs import regions as tab

    b = Backends()
    measured = {"spatext": {"both": 0.85, "inside": 0.95, "background": 0.9, "shape": 0.86, "colour": 0.99},
                "multidiffusion": {"both": 0.19, "inside": 0.37, "background": 0.25, "shape": 0.27, "colour": 0.54}}
    monkeypatch.setattr(b, "generator_defaults", lambda: {"region_methods": measured})
    good = tab.method_note(b, "spatext")
    assert "95%" in good and "does not follow" not in good
    bad = tab.method_note(b, "multidiffusion")
    assert bad.startswith("**MultiDiffusion does not follow painted areas on this model.**") and "37%" in bad
    both = tab.method_note(b, "compare")
    assert "SpaText" in both and "MultiDiffusion" in both
    monkeypatch.setattr(b, "generator_defaults", lambda: {"region_methods": {}})
    assert tab.method_note(b, "multidiffusion") == ""  # nothing measured: nothing claimed


def test_regions_eval_records_its_scores_where_the_tab_reads_them(tmp_path):
    from backends.shapes import regions_eval as E
    from backends.shapes.generator import GeneratorConfig

    cfg = tmp_path / "generator.json"
    cfg.write_text(GeneratorConfig().to_json())
    row = {"both": 0.5, "inside": 0.9, "background": 0.7, "shape": 0.5, "colour": 1.0, "regions": 10, "iou": 0.2}
    E.record({"spatext": row, "real": row}, n=10, guidance=2.5, steps=20, config_path=cfg)
    saved = GeneratorConfig.from_json(cfg.read_text()).metrics["regions_user"]
    assert saved["n_layouts"] == 10 and set(saved["methods"]) == {"spatext"}
    assert saved["methods"]["spatext"]["inside"] == 0.9
    assert json.loads(cfg.read_text())["patch"] == GeneratorConfig().patch  # the rest of the config is kept
