"""The Directions tab tells a user what a factor's supervised direction does on the active model."""
import json

import pandas as pd

from backends.registry import Backends


def test_a_factor_whose_direction_rarely_reaches_its_target_says_so(monkeypatch):
    from app.services.directions import supervised_note

    b = Backends()
    measured = {"colour → blue": {"reached": 0.0, "others_kept": 0.96, "strength": 1.6},
                "size → large": {"reached": 0.83, "others_kept": 0.71, "strength": 2.1}}
    monkeypatch.setattr(b, "generator_defaults", lambda: {"supervised_directions": measured})
    bad = supervised_note(b, "colour")
    assert bad.startswith("**A colour direction in h rarely changes the colour on this model**")
    assert "colour → blue" in bad and "0% of the sources" in bad and "96%" in bad and "1.6σ" in bad
    good = supervised_note(b, "size")
    assert "83%" in good and "rarely" not in good and "colour" not in good
    assert supervised_note(b, "shape") == ""  # nothing measured for it: nothing claimed
    monkeypatch.setattr(b, "generator_defaults", lambda: {})
    assert supervised_note(b, "colour") == ""


def test_score_counts_sources_not_already_at_the_target_and_keeps_the_other_factors():
    from backends.shapes.supervised_eval import score

    base = pd.DataFrame({"shape": ["circle", "square", "star", "cross"], "colour": ["red", "blue", "green", "red"],
                         "size": ["small"] * 4, "position": ["left"] * 4})
    after = base.copy()
    after.loc[0, "colour"] = "blue"  # reached, others kept
    after.loc[2, ["colour", "shape"]] = ["blue", "circle"]  # reached, shape lost
    r = score(base, after, "colour", "blue")
    assert r["n"] == 3 and abs(r["reached"] - 2 / 3) < 1e-9  # the blue source does not count
    assert r["others_kept"] == 0.75


def test_supervised_eval_records_its_scores_where_the_tab_reads_them(tmp_path, monkeypatch):
    from backends.shapes import generator as G
    from backends.shapes import supervised_eval as E
    from backends.shapes.generator import GeneratorConfig

    cfg = tmp_path / "generator.json"
    cfg.write_text(GeneratorConfig().to_json())
    res = {"colour → blue": {"reached": 0.04166, "others_kept": 1.0, "strength": 1.59, "n": 20}}
    E.record(res, n_sources=24, config_path=cfg)
    saved = GeneratorConfig.from_json(cfg.read_text()).metrics["supervised_directions"]
    assert saved["n_sources"] == 24 and saved["directions"]["colour → blue"]["reached"] == 0.042
    assert json.loads(cfg.read_text())["patch"] == GeneratorConfig().patch  # the rest of the config is kept
    # the plug-in's defaults (what Backends.generator_defaults returns for Shapes) carry them to the tab
    from backends.shapes import plugin

    monkeypatch.setattr(G, "shipped_config", lambda: GeneratorConfig.from_json(cfg.read_text()))
    assert plugin._defaults()["supervised_directions"]["colour → blue"]["others_kept"] == 1.0
