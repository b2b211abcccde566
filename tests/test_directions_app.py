"""The Directions tab through its named API endpoints (gradio_client), on a tiny random UNet."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from conftest import free_port  # noqa: E402
from test_directions import MeanColourJudge  # noqa: E402
from test_hspace import tiny_pipe  # noqa: E402


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from app.main import create_app
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(tmp_path_factory.mktemp("cache")), port=free_port(), max_upload_mb=20)
    backends = Backends(settings)
    backends.directions_pipe = tiny_pipe()
    backends.directions_judge = MeanColourJudge()
    backends.directions_bank_size = 16
    demo = create_app(settings, backends)
    demo.launch(server_name="127.0.0.1", server_port=settings.port, prevent_thread_lock=True,
                max_file_size=settings.max_upload_bytes, quiet=True)
    from gradio_client import Client

    yield Client(f"http://127.0.0.1:{settings.port}/", verbose=False), backends
    demo.close()


def img(url: str) -> np.ndarray:
    from PIL import Image

    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def test_generate_discover_edit_strip_judge(app):
    c, _ = app
    src = c.predict("a red circle", 3, 4, 1.0, -1.0, api_name="/directions_source_prompt")
    assert src["kind"] == "generated" and src["steps"] == 4
    base = img(src["image"])
    assert base.shape == (64, 64, 3)
    pcs = c.predict(16, 3, api_name="/directions_discover_pca")
    assert [p["kind"] for p in pcs] == ["pca"] * 3
    ids = [p["id"] for p in pcs]
    same = c.predict(src["source"], ids[:1], [0.0], 0.0, 1.0, api_name="/directions_edit")
    np.testing.assert_array_equal(img(same["image"]), base)
    out = c.predict(src["source"], ids[:2], [4.0, -2.0], 0.0, 1.0, api_name="/directions_edit")
    assert np.abs(img(out["image"]).astype(int) - base).mean() > 0.5 and out["ms"] > 0
    asym = c.predict(src["source"], ids[:2], [4.0, -2.0], 0.0, 1.0, True, api_name="/directions_edit")
    assert img(asym["image"]).shape == (64, 64, 3) and asym["image"] != out["image"]
    cond = c.predict(src["source"], ids[:2], [4.0, -2.0], 0.0, 1.0, False, "cond", api_name="/directions_edit")
    assert cond["image"] != out["image"]  # Δh in the conditional half only: amplified by the guidance
    strip = c.predict(src["source"], ids[0], 3.0, 5, api_name="/directions_strip")
    assert len(strip["images"]) == 5 and strip["strengths"][0] == -3.0 and strip["istd"] >= 0
    assert strip["range"] is None  # a given strength is used as it is
    auto = c.predict(src["source"], ids[0], 0.0, 5, api_name="/directions_strip")  # 0: read off the change curve
    rng = auto["range"]
    assert rng["reason"] and auto["strengths"][-1] == pytest.approx(rng["range"]) and auto["strengths"][0] == pytest.approx(-rng["range"])
    grid = [p["strength"] for p in rng["curve"]]
    assert rng["range"] in grid and grid == sorted(grid) and all(0 <= p["change"] <= 1 for p in rng["curve"])
    # the default Shapes world checks for broken frames: none at or below the chosen range
    assert not any(p["broken"] for p in rng["curve"] if p["strength"] <= rng["range"])
    rep = c.predict(ids[0], 2, 10.0, api_name="/directions_judge")
    assert set(rep["changes"]) == {"shape", "colour", "size", "position"} and 0 <= rep["disentanglement"] <= 1
    sup = c.predict("colour", "blue", "", [ids[0]], "truth", api_name="/directions_supervised")
    assert sup["kind"] == "supervised" and sup["orthogonal_to"] == [ids[0]]
    txt = c.predict("a red circle", "a blue circle", api_name="/directions_text")
    out = c.predict(src["source"], [txt["id"]], [1.0], 0.0, 1.0, api_name="/directions_edit")
    assert np.abs(img(out["image"]).astype(int) - base).mean() > 0.5
    jac = c.predict(src["source"], 1, 2, "top left", api_name="/directions_image_specific")
    assert len(jac) == 2 and jac[0]["masked"]
    assert c.predict(api_name="/directions_layers") == ["mid_block", "up_blocks.0", "up_blocks.1"]
    ups = c.predict(16, 2, "up_blocks.1", api_name="/directions_discover_pca")
    assert ups[0]["id"] == "up1-pc1" and ups[0]["layer"] == "up_blocks.1"
    out = c.predict(src["source"], [ups[0]["id"]], [3.0], 0.0, 1.0, api_name="/directions_edit")
    assert np.abs(img(out["image"]).astype(int) - base).mean() > 0.5
    with pytest.raises(Exception, match="different layers"):
        c.predict(src["source"], [ups[0]["id"], ids[0]], [1.0, 1.0], 0.0, 1.0, api_name="/directions_edit")
    names = {d["id"] for d in c.predict(api_name="/directions_list")}
    assert set(ids) <= names and jac[0]["id"] in names


def test_export_import_and_atlas(app, tmp_path):
    from gradio_client import handle_file

    c, backends = app
    c.predict(16, 2, api_name="/directions_discover_pca")
    path = c.predict([], api_name="/directions_export")
    got = c.predict(handle_file(path), api_name="/directions_import")
    assert len(got) >= 2
    key = c.predict(2, 16, api_name="/directions_to_atlas")
    corpus = backends.corpus(key)
    assert len(corpus) == 16 and corpus.images is not None and "colour" in corpus.meta.columns
    item = c.predict(key, "h-3", 4, api_name="/directions_source_item")
    assert item["kind"] == "generated"
    # the h-space map: a direction as a custom axis, and one sample's trajectory across the steps
    pcs = c.predict(16, 2, api_name="/directions_discover_pca")
    m = c.predict(3, pcs[0]["id"], "PCA 2", 5, api_name="/directions_map")
    # the axis is titled by the direction (a judged PCA direction keeps "PC 1" in its name)
    assert len(m["x"]) == 16 and len(m["trajectory"]) == 10 and "PC 1" in m["axes"][0], m["axes"]
    assert np.std(m["x"]) > 0
    with pytest.raises(Exception, match="Unknown direction"):
        c.predict(3, "nope", "PCA 2", -1, api_name="/directions_map")
    g = c.predict([1, 2, 3], [4, 5], "mine", api_name="/directions_groups")
    assert g["kind"] == "groups" and g["n_pos"] == 3 and g["n_neg"] == 2
    with pytest.raises(Exception, match="outside"):
        c.predict([1, 999], [4], "bad", api_name="/directions_groups")


def test_h_read_from_the_conditional_half(app):
    """PCA, supervised directions, the map and the Atlas corpus can read h from the conditional half
    (which sees the prompt); they are kept apart from the unconditional ones and a bad half is refused."""
    c, backends = app
    unc = c.predict(16, 2, "mid_block", "uncond", api_name="/directions_discover_pca")
    con = c.predict(16, 2, "mid_block", "cond", api_name="/directions_discover_pca")
    assert [p["id"] for p in con] == ["cond-pc1", "cond-pc2"] and [p["id"] for p in unc] == ["pc1", "pc2"]
    assert con[0]["name"].endswith("(conditional h)") and not unc[0]["name"].endswith("(conditional h)")
    sup = c.predict("colour", "red", "", [], "truth", "mid_block", "cond", api_name="/directions_supervised")
    assert sup["id"].endswith("-cond")
    m_unc = c.predict(3, "PCA 1", "PCA 2", -1, "uncond", api_name="/directions_map")
    m_con = c.predict(3, "PCA 1", "PCA 2", -1, "cond", api_name="/directions_map")
    assert len(m_con["x"]) == 16 and not np.allclose(m_con["x"], m_unc["x"])
    key = c.predict(2, 16, "cond", api_name="/directions_to_atlas")
    assert key != c.predict(2, 16, "uncond", api_name="/directions_to_atlas")
    with pytest.raises(Exception, match="guidance half"):
        c.predict(16, 2, "mid_block", "both", api_name="/directions_discover_pca")


def test_inverted_upload_of_odd_images(app, tmp_path):
    from gradio_client import handle_file
    from PIL import Image

    c, _ = app
    from backends.shapes import scenes

    rgb = scenes.make_batch(1, seed=2, split="test", single=True, size=96).images[0]
    cases = {
        "rgba.png": Image.fromarray(rgb).convert("RGBA"),
        "grey.png": Image.fromarray(rgb).convert("L"),
        "wide.png": Image.fromarray(rgb).resize((150, 90)),
        "huge.png": Image.new("RGB", (4000, 4000), (200, 30, 30)),
    }
    for name, im in cases.items():
        p = tmp_path / name
        im.save(p)
        out = c.predict(handle_file(str(p)), "a shape", "ddpm", 4, api_name="/directions_source_image")
        assert out["kind"] == "ddpm-inversion" and out["psnr"] == "inf" or out["psnr"] >= 30, name
        assert out["codec_psnr"] == "inf"
        assert out["notes"], name  # what was changed is reported
    ddim = c.predict(handle_file(str(tmp_path / "wide.png")), "a shape", "ddim", 4, api_name="/directions_source_image")
    assert ddim["kind"] == "ddim-inversion" and isinstance(ddim["psnr"], (float, int))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(Exception, match="could not read it as an image"):
        c.predict(handle_file(str(bad)), "", "ddpm", 4, api_name="/directions_source_image")


def raw_call(client, api_name: str, data_json: str) -> str:
    """POST a raw JSON body to /gradio_api/call/<name> and return the streamed result text."""
    import httpx

    base = client.src.rstrip("/")
    r = httpx.post(f"{base}/gradio_api/call/{api_name}", content=f'{{"data": {data_json}}}',
                   headers={"content-type": "application/json"}, timeout=60)
    if r.status_code != 200:
        return r.text
    event = r.json()["event_id"]
    return httpx.get(f"{base}/gradio_api/call/{api_name}/{event}", timeout=60).text


def test_bad_api_input_gets_clear_messages(app):
    c, _ = app
    src = c.predict("a blue star", 1, 4, 1.0, -1.0, api_name="/directions_source_prompt")
    pcs = c.predict(16, 2, api_name="/directions_discover_pca")
    did = pcs[0]["id"]
    cases = [
        ((src["source"], ["no-such-direction"], [1.0], 0.0, 1.0), "Unknown direction"),
        ((src["source"], [did], [1e9], 0.0, 1.0), "strength"),
        ((src["source"], [did], [1.0, 2.0], 0.0, 1.0), "strengths for"),
        ((src["source"], [did], [1.0], 0.8, 0.2), "t_start"),
        (("src-nope", [did], [1.0], 0.0, 1.0), "unknown source"),
        ((src["source"], [did], [1.0], 0.0, 1.0, False, "uncond"), "guidance half"),
    ]
    for args, match in cases:
        with pytest.raises(Exception, match=match):
            c.predict(*args, api_name="/directions_edit")
    # NaN cannot be written by gradio_client (strict JSON); send it as raw JSON text
    msg = raw_call(c, "directions_edit", f'["{src["source"]}", ["{did}"], [NaN], 0.0, 1.0, false, "both"]')
    assert "strength" in msg and "nan" in msg.lower()
    with pytest.raises(Exception, match="prompt is empty"):
        c.predict("", 0, 4, 1.0, -1.0, api_name="/directions_source_prompt")
    with pytest.raises(Exception, match="eta"):
        c.predict("a shape", 0, 4, 7.0, -1.0, api_name="/directions_source_prompt")
    with pytest.raises(Exception, match="Unknown factor"):
        c.predict("texture", "rough", "", [], "truth", api_name="/directions_supervised")
    with pytest.raises(Exception, match="region"):
        c.predict(src["source"], 1, 2, "somewhere", api_name="/directions_image_specific")
    # the server still serves
    ok = c.predict(src["source"], [did], [2.0], 0.0, 1.0, api_name="/directions_edit")
    assert ok["image"].startswith("data:image/png")


def test_the_tab_starts_at_the_models_guidance_halves():
    """Shapes: the halves its config names (the shipped one: cond / cond, where colour sliders work);
    other generators: Haas et al.'s uncond / both."""
    from app.services.directions import half_defaults
    from backends.generative.sd import GeneratorSpec
    from backends.registry import Backends
    from backends.shapes.generator import shipped_config

    shapes = Backends()
    shapes.generator_spec = lambda: GeneratorSpec("shapes")
    cfg = shipped_config()
    assert half_defaults(shapes) == (cfg.directions_record_half, cfg.directions_delta_half)
    sd = Backends()
    sd.generator_spec = lambda: GeneratorSpec("diffusers", "some/folder")
    assert half_defaults(sd) == ("uncond", "both")


def test_adding_a_direction_selects_it_for_strip_and_judge(tmp_path):
    """In the tab: after "Add", "Make strip" and "Judge" work on the new direction without choosing
    it again (they failed with "choose a direction"); a mistake still gets its message."""
    import gradio as gr

    from app.main import create_app
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(tmp_path / "cache"))
    backends = Backends(settings)
    backends.directions_pipe = tiny_pipe()
    backends.directions_judge = MeanColourJudge()
    backends.directions_bank_size = 16
    demo = create_app(settings, backends)

    def fn(name):
        return [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name][0].fn

    out = fn("ui_supervised")("colour", "blue", "", [], "truth", "mid_block", "uncond")
    assert out[0].startswith("Added")
    did = out[5]["value"]  # message, table, strip, judge, orthogonal-to, then the slots: the first holds it
    assert out[2]["value"] == out[3]["value"] == did  # strip and judge menus: the new direction
    assert out[2] is not out[3]  # one update per output (Gradio consumes each as it applies it)
    with pytest.raises(gr.Error, match="choose a direction to judge"):
        fn("ui_judge")("", 4)


def test_disentanglement_scores_of_each_family(app):
    """#22 item 3: MIG, DCI and InfoMEC of each family of directions in the library against the Shapes
    factors, with PCA of h as a baseline, in [0, 1]; a bad step gets a message."""
    c, _ = app
    c.predict(16, 3, api_name="/directions_discover_pca")
    c.predict("colour", "blue", "", [], "truth", api_name="/directions_supervised")
    rows = c.predict(-1, 0, api_name="/directions_disentanglement")
    cols = ["family", "directions", "MIG", "DCI disentanglement", "DCI completeness", "DCI informativeness",
            "InfoM", "InfoE", "InfoC"]
    assert all(list(r) == cols for r in rows), rows[0]
    fams = {r["family"]: r for r in rows}
    assert fams["pca"]["directions"] >= 3, list(fams)
    assert any(f.startswith("supervised") for f in fams) and "PCA of h (top 3)" in fams, list(fams)
    for r in rows:
        assert all(0 <= r[k] <= 1 for k in cols[2:]), r
    # a family's scores do not depend on the other families; the step is chosen
    again = c.predict(2, 16, api_name="/directions_disentanglement")
    assert {r["family"] for r in again} == set(fams)
    with pytest.raises(Exception, match="step"):
        c.predict(99, 0, api_name="/directions_disentanglement")


def test_disentanglement_of_an_empty_library_says_so():
    from app.services.directions import DirectionsService
    from backends.errors import InputError
    from backends.registry import Backends

    with pytest.raises(InputError, match="library is empty"):
        DirectionsService(Backends(), pipe=object()).disentanglement()


def test_noiseclr_directions_join_the_library(app):
    """#22 item 1: NoiseCLR learns k text directions from the bank's samples (a bounded run); they are
    in the library, move the image, make a strip, are judged on several sources and score as a family."""
    c, _ = app
    src = c.predict("a blue square", 5, 4, 1.0, -1.0, api_name="/directions_source_prompt")
    dirs = c.predict(2, 3, 2, 16, 0.5, 0, "", api_name="/directions_noiseclr")
    assert [d["name"] for d in dirs] == ["NoiseCLR 1", "NoiseCLR 2"]
    assert all(d["kind"] == "text" and d["method"] == "noiseclr" and d["steps"] == 3 for d in dirs), dirs
    assert {d["id"] for d in dirs} <= {d["id"] for d in c.predict(api_name="/directions_list")}
    out = c.predict(src["source"], [dirs[0]["id"]], [1.0], 0.0, 1.0, api_name="/directions_edit")
    assert np.abs(img(out["image"]).astype(int) - img(src["image"])).mean() > 0.1
    strip = c.predict(src["source"], dirs[1]["id"], 1.0, 3, api_name="/directions_strip")
    assert len(strip["images"]) == 3
    rep = c.predict(dirs[0]["id"], 3, 0.0, api_name="/directions_judge")  # a text direction on 3 sources
    assert 0 <= rep["disentanglement"] <= 1
    fams = {r["family"]: r for r in c.predict(-1, 0, api_name="/directions_disentanglement")}
    assert fams["noiseclr"]["directions"] == 2 and 0 <= fams["noiseclr"]["MIG"] <= 1, list(fams)
    with pytest.raises(Exception, match="k has to be"):
        c.predict(1, 3, 2, 16, api_name="/directions_noiseclr")
    with pytest.raises(Exception, match="batch_size has to be"):
        c.predict(2, 3, 99, 16, api_name="/directions_noiseclr")
