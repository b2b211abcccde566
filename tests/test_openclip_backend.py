"""The OpenCLIP image-encoder backend (issue #9) on tiny random OpenCLIP models: no download, no network.

A tiny ViT-CLIP config is registered with open_clip under TINY; "openclip:<TINY>/none" builds it with
seeded random weights, so every test runs in seconds and embeddings are reproducible.
"""
import json
import socket
import time

import numpy as np
import pytest

from backends.errors import InputError
from backends.representations import encoders as ie

TINY = "LatentAtlasTinyViT"
TINY_CFG = {"embed_dim": 32,
            "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
SPEC = f"openclip:{TINY}/none"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def tiny_arch(tmp_path_factory):
    """Register the tiny architecture with open_clip (a JSON config, as open_clip's own configs are)."""
    import open_clip

    path = tmp_path_factory.mktemp("oc_cfg") / f"{TINY}.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)
    assert TINY in open_clip.list_models()
    return TINY


@pytest.fixture(scope="module")
def enc():
    return ie.get_image_encoder(SPEC)


@pytest.fixture(scope="module")
def scenes_batch():
    from backends.shapes import scenes

    return scenes.make_batch(24, seed=5, split="test", size=32, single=True)


@pytest.fixture
def no_network(monkeypatch):
    """Refuse and record every attempt to open a connection; the test fails if there was one (the loader
    turns the refusal into a message, so the record is what shows it)."""
    attempts = []

    def refuse(*a, **k):
        attempts.append(a)
        raise OSError("network access refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield attempts
    assert attempts == [], f"the loader tried the network: {attempts}"


# ---------------------------------------------------------------------------------------
# Encoding


def test_encode_images_shape_unit_norm_and_determinism(enc, scenes_batch):
    imgs = scenes_batch.images
    v = enc.encode_images(imgs)
    assert v.shape == (len(imgs), 32) and v.dtype == np.float32 and enc.dim == 32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(enc.encode_images(imgs), v)  # same input, same output
    np.testing.assert_allclose(enc.encode_images(imgs[3]), v[3:4], atol=1e-6)  # one (H, W, 3) image
    np.testing.assert_allclose(enc.encode_images(imgs, batch_size=5), v, atol=1e-5)  # batching changes nothing
    assert np.abs(v[0] - v[1]).max() > 1e-3  # different scenes, different vectors
    assert enc.encode_images(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 32)


def test_random_weights_are_seeded_and_the_encoder_is_cached(enc, scenes_batch):
    assert ie.get_image_encoder(SPEC) is enc and ie.get_image_encoder(f"openclip:{TINY}/") is enc
    ie.clear_encoder_cache()
    fresh = ie.get_image_encoder(SPEC)  # a second build, same seed
    assert fresh is not enc
    np.testing.assert_array_equal(fresh.encode_images(scenes_batch.images[:4]), enc.encode_images(scenes_batch.images[:4]))


def test_bad_images_are_refused_with_their_shape(enc):
    with pytest.raises(InputError, match=r"\(N, H, W, 3\).*\(4, 8, 8\)"):
        enc.encode_images(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(InputError, match="uint8.*float32"):
        enc.encode_images(np.zeros((2, 8, 8, 3), np.float32))


def test_encode_texts(enc):
    texts = ["a red circle", "a blue square", "a red circle"]
    q = enc.encode_texts(texts)
    assert q.shape == (3, 32) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(q[0], q[2], atol=1e-6)
    assert np.abs(q[0] - q[1]).max() > 1e-3
    np.testing.assert_allclose(enc.encode_texts("a red circle"), q[:1], atol=1e-6)
    assert enc.encode_texts([]).shape == (0, 32)
    with pytest.raises(InputError, match="strings.*3"):
        enc.encode_texts(["ok", 3])


def test_text_to_image_search_end_to_end(enc, scenes_batch):
    """Text queries against a FAISS index of image vectors rank exactly as the cosine scores say, and each
    image's own vector finds itself first (the machinery; a random model has no semantics to test)."""
    from backends.corpora.index import VectorIndex

    v = enc.encode_images(scenes_batch.images)
    index = VectorIndex(v, metric="cosine", kind="flat")
    queries = enc.encode_texts(["a red circle", "a green star", "shapes"])
    dist, idx = index.search(queries, k=5)
    scores = queries @ v.T
    for row in range(len(queries)):
        np.testing.assert_array_equal(idx[row], np.argsort(-scores[row], kind="stable")[:5])
        np.testing.assert_allclose(1 - dist[row], scores[row, idx[row]], atol=1e-5)
    _, self_idx = index.search(v, k=1)
    np.testing.assert_array_equal(self_idx[:, 0], np.arange(len(v)))


# ---------------------------------------------------------------------------------------
# Local files: directories and safetensors checkpoints; no pickle


def test_local_directory_round_trip(enc, scenes_batch, tmp_path, no_network):
    d = ie.save_encoder_dir(enc, tmp_path / "tiny-clip")
    assert sorted(p.name for p in d.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]
    assert json.loads((d / "open_clip_config.json").read_text())["model_cfg"]["embed_dim"] == 32
    for spec in (str(d), f"local-dir:{d}"):
        back = ie.get_image_encoder(spec)
        assert back is not enc and back.name == f"local-dir:{d.resolve()}"
        np.testing.assert_allclose(back.encode_images(scenes_batch.images), enc.encode_images(scenes_batch.images),
                                   atol=1e-6)
        np.testing.assert_allclose(back.encode_texts(["a red circle"]), enc.encode_texts(["a red circle"]), atol=1e-6)


def test_trained_weights_in_a_directory_are_really_loaded(enc, scenes_batch, tmp_path):
    """Change the saved weights: the loaded encoder must follow the file, not its random initialisation."""
    from safetensors.torch import load_file, save_file

    d = ie.save_encoder_dir(enc, tmp_path / "edited")
    state = load_file(str(d / "open_clip_model.safetensors"))
    state["visual.proj"] = state["visual.proj"].flip(1).contiguous()
    save_file(state, str(d / "open_clip_model.safetensors"))
    v = ie.get_image_encoder(str(d)).encode_images(scenes_batch.images[:3])
    np.testing.assert_allclose(v, enc.encode_images(scenes_batch.images[:3])[:, ::-1], atol=1e-5)


def test_safetensors_checkpoint_file_spec(enc, scenes_batch, tmp_path):
    d = ie.save_encoder_dir(enc, tmp_path / "ckpt")
    path = d / "open_clip_model.safetensors"
    other = ie.get_image_encoder(f"openclip:{TINY}/{path}")
    assert other.name == f"openclip:{TINY}/{path.resolve()}"
    np.testing.assert_allclose(other.encode_images(scenes_batch.images[:4]), enc.encode_images(scenes_batch.images[:4]),
                               atol=1e-6)


def test_pickled_checkpoints_are_refused_without_being_read(tmp_path, monkeypatch):
    import torch

    def no_torch_load(*a, **k):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_torch_load)
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"\x80\x04not really a pickle")
    spec = f"openclip:{TINY}/{ckpt}"
    with pytest.raises(ie.EncoderUnavailable, match="safetensors only") as e:
        ie.get_image_encoder(spec)
    assert str(ckpt) in str(e.value) and spec in str(e.value)
    assert "pickle" in ie.encoder_unavailable(spec)
    # a directory whose only weights are a pickle is refused too, naming the file
    d = tmp_path / "pickled-dir"
    d.mkdir()
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG}))
    (d / "open_clip_pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ie.EncoderUnavailable, match="open_clip_pytorch_model.bin.*safetensors only"):
        ie.get_image_encoder(str(d))


def test_broken_local_directories_say_what_is_missing(tmp_path):
    with pytest.raises(ie.EncoderUnavailable, match="not a directory"):
        ie.get_image_encoder(str(tmp_path / "nowhere"))
    with pytest.raises(ie.EncoderUnavailable, match="no open_clip_config.json"):
        ie.get_image_encoder(str(tmp_path))
    (tmp_path / "open_clip_config.json").write_text("{not json")
    with pytest.raises(ie.EncoderUnavailable, match="not valid JSON"):
        ie.get_image_encoder(str(tmp_path))
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG}))
    with pytest.raises(ie.EncoderUnavailable, match="no open_clip_model.safetensors"):
        ie.get_image_encoder(str(tmp_path))
    with pytest.raises(ie.EncoderUnavailable, match="not found"):
        ie.get_image_encoder(f"openclip:{TINY}/{tmp_path / 'missing.safetensors'}")


def test_mismatched_weights_are_a_message_not_a_traceback(tmp_path):
    import torch
    from safetensors.torch import save_file

    bad = tmp_path / "wrong.safetensors"
    save_file({"visual.proj": torch.zeros(3, 3)}, str(bad))
    with pytest.raises(ie.EncoderUnavailable, match=r"could not build the OpenCLIP model \(RuntimeError"):
        ie.get_image_encoder(f"openclip:{TINY}/{bad}")


# ---------------------------------------------------------------------------------------
# Offline: fail fast with a message, never a download


def test_unknown_tag_offline_fails_fast_naming_the_spec(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = "openclip:ViT-B-32/not_a_real_tag"
    t = time.perf_counter()
    with pytest.raises(InputError) as e:
        ie.get_image_encoder(spec)
    assert time.perf_counter() - t < 10
    assert spec in str(e.value) and "unknown pretrained tag 'not_a_real_tag'" in str(e.value)
    assert "laion2b_s34b_b79k" in str(e.value)  # lists the known tags


def test_uncached_known_tag_offline_fails_fast_with_how_to_fix(monkeypatch, tmp_path, no_network):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)  # as if huggingface_hub had been imported before the flag
    for spec in ("openclip:ViT-B-32/laion2b_s34b_b79k", "openclip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"):
        t = time.perf_counter()
        with pytest.raises(ie.EncoderUnavailable) as e:
            ie.get_image_encoder(spec)
        assert time.perf_counter() - t < 10
        msg = str(e.value)
        assert spec in msg and "not in the local Hugging Face cache" in msg and "HF_HUB_OFFLINE=1" in msg
        assert f"python -m backends.representations.encoders download {spec}" in msg and "local directory" in msg
        assert "not in the local Hugging Face cache" in ie.encoder_unavailable(spec)


def test_unknown_architecture_names_close_matches():
    with pytest.raises(ie.EncoderUnavailable, match=r"unknown OpenCLIP architecture 'ViT-B-33'.*ViT-B-32"):
        ie.get_image_encoder("openclip:ViT-B-33/none")


# ---------------------------------------------------------------------------------------
# Specs


@pytest.mark.parametrize("spec, message", [
    ("", "non-empty"),
    ("   ", "non-empty"),
    ("openclip:", "names no OpenCLIP architecture"),
    ("openclip:/laion2b_s34b_b79k", "names no OpenCLIP architecture"),
    ("openclip:ViT-B-32", r"names no pretrained weights.*openclip:ViT-B-32/none"),
    ("clip", "Unknown encoder spec 'clip'"),
    ("shapes-cn", "Did you mean 'shapes-cnn'"),
    ("hf-hub:laion", "repository id"),
    ("openclip:hf-hub:a/b/c", "repository id"),
    ("local-dir:", "needs a directory"),
])
def test_malformed_specs_have_clear_messages(spec, message):
    with pytest.raises(InputError, match=message):
        ie.parse_encoder_spec(spec)
    with pytest.raises(InputError, match=message):
        ie.get_image_encoder(spec)


def test_parse_and_canonical_forms(tmp_path):
    assert ie.parse_encoder_spec("shapes") == ("shapes", "shapes-cnn", None)
    assert ie.parse_encoder_spec("shapes-vit") == ("shapes", "shapes-vit", None)
    assert ie.parse_encoder_spec("openclip:ViT-B-32/laion2b_s34b_b79k") == ("openclip", "ViT-B-32", "laion2b_s34b_b79k")
    assert ie.parse_encoder_spec("openclip:ViT-B-32/None") == ("openclip", "ViT-B-32", None)
    assert ie.parse_encoder_spec("openclip:hf-hub:org/repo") == ("hf-hub", None, "org/repo")
    assert ie.parse_encoder_spec(str(tmp_path)) == ("local-dir", None, str(tmp_path))
    assert ie.canonical_spec("shapes") == "shapes-cnn"
    assert ie.canonical_spec("openclip:ViT-B-32/") == "openclip:ViT-B-32/none"
    specs = ie.available_encoder_specs()
    assert specs[:2] == ["shapes-cnn", "shapes-vit"] and any(s.startswith("openclip:<arch>/") for s in specs)


def test_shapes_specs_are_the_bundled_encoders():
    from backends.shapes.encoders import load_image_encoder, weights_path

    if not weights_path("shapes-cnn").exists():
        pytest.skip("Shapes encoder weights are not in assets/")
    assert ie.get_image_encoder("shapes") is load_image_encoder("shapes-cnn")
    assert ie.encoder_unavailable("shapes-vit") is None


def test_module_import_is_cheap():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, backends.representations.encoders as m; m.parse_encoder_spec('openclip:ViT-B-32/x'); "
            "print(sorted({'torch', 'open_clip'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                         cwd=str(Path(__file__).resolve().parents[1]))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------
# Stitching and cluster names with an OpenCLIP encoder


@pytest.fixture
def small_world():
    """A 240-scene Shapes world registered for this test only (the built-in one has 3,000)."""
    import pandas as pd

    from backends.representations import stitching as st
    from backends.shapes import scenes

    name = "openclip-test-shapes"

    @st.register_world(name, "240 Shapes scenes for the OpenCLIP tests")
    def _world():
        b = scenes.make_batch(240, seed=5, split="test", size=32, single=True)
        meta = pd.DataFrame({"id": [f"s{i}" for i in range(240)], "shape": b.factors["shape"].astype(str),
                             "colour": b.factors["colour"].astype(str), "split": st._split_column(240)})
        return st.World(name, meta, labels=("shape", "colour"), images=b.images)

    spaces_before = set(st._SPACES)
    yield name
    for s in set(st._SPACES) - spaces_before:
        st._SPACES.pop(s)
        st._VEC_CACHE.pop(s, None)
    st._WORLDS.pop(name)
    st._WORLD_CACHE.pop(name, None)


def test_encoder_space_stitches_against_itself_and_shapes_cnn(enc, small_world, tmp_path):
    from backends.representations import relative as rel
    from backends.representations import stitching as st
    from backends.shapes.encoders import weights_path

    space = st.register_encoder_space(SPEC, world=small_world)
    assert space.name == f"{SPEC}@{small_world}" and st.register_encoder_space(SPEC, world=small_world) is space
    listed = {s["name"]: s for s in st.available_spaces()}
    assert listed[space.name]["unavailable"] is None and listed[space.name]["world"] == small_world
    # the same model loaded from a directory is a parallel space whose relative representation is identical
    copy = st.register_encoder_space(str(ie.save_encoder_dir(enc, tmp_path / "copy")), world=small_world)
    pair = st.load_pair(space.name, copy.name)
    assert pair.x_a.shape == (240, 32)
    anchors = st.pair_anchors(pair, 24, strategy="random")
    same = rel.compare(pair.x_a, pair.x_b, anchors, k=5)
    assert same["relative"]["jaccard"] > 0.99 and same["relative"]["mrr"] > 0.99
    np.testing.assert_allclose(space.encode_images(pair.images[:2]), pair.x_a[:2], atol=1e-5)
    if not weights_path("shapes-cnn").exists():
        pytest.skip("Shapes encoder weights are not in assets/")
    cnn = st.register_encoder_space("shapes-cnn", world=small_world)
    pair = st.load_pair(space.name, cnn.name)
    assert pair.x_a.shape == (240, 32) and pair.x_b.shape == (240, 128)
    anchors = st.pair_anchors(pair, 24, strategy="random")
    r_a, r_b = st.relative_pair(pair, anchors)
    assert r_a.shape == r_b.shape == (240, 24)
    cross = rel.compare(pair.x_a, pair.x_b, anchors, k=5)
    assert 0 <= cross["relative"]["jaccard"] < 0.99 and np.isfinite(cross["relative"]["cka"])


def test_openclip_space_from_the_environment(monkeypatch, tmp_path):
    from backends.representations import stitching as st

    assert st.legacy_openclip_spec("ViT-B-32:laion2b_s34b_b79k") == "openclip:ViT-B-32/laion2b_s34b_b79k"
    assert st.legacy_openclip_spec("ViT-B-32:") == "openclip:ViT-B-32/none"
    assert st.legacy_openclip_spec(SPEC) == SPEC and st.legacy_openclip_spec(str(tmp_path)) == str(tmp_path)
    space = st.get_space("openclip")
    monkeypatch.delenv("LATENT_ATLAS_OPENCLIP", raising=False)
    assert "LATENT_ATLAS_OPENCLIP" in space.unavailable()
    monkeypatch.setenv("LATENT_ATLAS_OPENCLIP", f"{TINY}:")  # the old model:pretrained form
    assert space.unavailable() is None
    imgs = np.zeros((2, 32, 32, 3), np.uint8)
    np.testing.assert_allclose(space.encode_images(imgs), ie.get_image_encoder(SPEC).encode_images(imgs), atol=1e-6)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LATENT_ATLAS_OPENCLIP", "openclip:ViT-B-32/not_a_real_tag")
    assert "LATENT_ATLAS_OPENCLIP=openclip:ViT-B-32/not_a_real_tag" in space.unavailable()
    with pytest.raises(InputError, match="not_a_real_tag"):
        space.encode_images(imgs)


def test_cluster_names_from_the_tiny_encoder(enc, scenes_batch):
    import pandas as pd

    from backends.clusters import names as cn
    from backends.clusters.names import Candidate, name_clusters, text_space_for
    from backends.corpora.corpus import Corpus

    cands = [Candidate("red shapes", ("colour",)), Candidate("blue shapes", ("colour",)),
             Candidate("a green star", ("colour", "shape")), Candidate("small squares", ("size", "shape"))]
    space = cn.text_space_from_encoder(enc, cands)
    assert space.name == enc.name and cn.text_space_from_encoder(enc, cands) is space
    # a cluster whose mean is exactly a description's text vector is named by that description
    centroids = enc.encode_texts(["blue shapes", "a green star"])
    names = name_clusters(centroids, space)
    assert names[0][0][0] == "blue shapes" and names[1][0][0] == "a green star"
    assert name_clusters(centroids, space, goal="group by colour")[1][0][0] in ("red shapes", "blue shapes")
    # corpora: image vectors of the encoder get its text space; another dimension gets none
    v = enc.encode_images(scenes_batch.images)
    meta = pd.DataFrame({"id": [str(i) for i in range(len(v))]})
    digits_like = text_space_for(Corpus("uploads", v, meta), encoder=enc)
    assert [c.text for c in digits_like.candidates] == [c.text for c in cn.generic_candidates()]
    shapes_like = text_space_for(Corpus("shapes-openclip", v, meta), encoder=enc)
    assert any(c.text == "red shapes" for c in shapes_like.candidates)
    other = np.random.default_rng(0).normal(size=(len(v), 7)).astype(np.float32)
    assert text_space_for(Corpus("uploads", other, meta), encoder=enc) is None
    assert len(name_clusters(v[:3], digits_like)[0]) == 3
    with pytest.raises(InputError, match="no encode_texts"):
        cn.text_space_from_encoder(object())


# ---------------------------------------------------------------------------------------
# The app's --encoder choice (Backends)


def test_backends_use_the_chosen_encoder_for_uploads_search_names_and_stitching(tmp_path, scenes_batch):
    from PIL import Image

    from backends.registry import Backends
    from backends.representations import stitching as stitching
    from backends.settings import Settings

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(scenes_batch.images[:12]):
        Image.fromarray(im).save(folder / f"{i:02d}.png")
    b = Backends(Settings(encoder=SPEC, cache_dir=tmp_path / "cache"))
    assert b.model_notes() == [] and b.encoder_spec() == ie.canonical_spec(SPEC)
    key = b.add_path(str(folder))
    corpus = b.corpus(key)
    assert corpus.vectors.shape == (12, 32) and f"image encoder {ie.canonical_spec(SPEC)}" in corpus.description
    q = corpus.text_query("a red circle")  # search by meaning in the encoder's own space
    assert q.shape == (32,) and abs(float(np.linalg.norm(q)) - 1) < 1e-4
    np.testing.assert_allclose(q, ie.get_image_encoder(SPEC).encode_texts(["a red circle"])[0], atol=1e-6)
    assert ie.canonical_spec(SPEC) in [s["name"] for s in stitching.available_spaces()]  # a Stitching space too

    from app.services.clusters import ClustersService

    space = ClustersService(b).text_space(key)
    assert space is not None  # cluster names come from the tiny encoder's text tower


def test_backends_fall_back_to_shapes_with_a_note_for_an_unusable_encoder(tmp_path):
    from backends.registry import Backends
    from backends.settings import Settings

    b = Backends(Settings(encoder="openclip:NoSuchArch/none", cache_dir=tmp_path / "cache"))
    assert b.encoder_spec() == "shapes-cnn"
    (note,) = [n for n in b.model_notes() if "image encoder" in n]
    assert "openclip:NoSuchArch/none" in note and "using shapes-cnn instead" in note


def test_text_encoder_setting_picks_the_goal_encoder(tmp_path):
    from backends.registry import Backends
    from backends.settings import Settings

    auto = Backends(Settings(encoder=SPEC, cache_dir=tmp_path / "c"))
    f = auto.goal_text_encoder()
    np.testing.assert_allclose(f(["a red circle"]), ie.get_image_encoder(SPEC).encode_texts(["a red circle"]))
    assert Backends(Settings(encoder=SPEC, text_encoder="minilm", cache_dir=tmp_path / "c")).goal_text_encoder() is None
    assert Backends(Settings(cache_dir=tmp_path / "c")).goal_text_encoder() is None  # Shapes: MiniLM
    with pytest.raises(ValueError, match="text encoder must be auto or minilm"):
        Settings.from_env(text_encoder="bert")


def test_the_differentiable_image_tower_matches_encode_images_and_passes_gradients(enc, scenes_batch):
    """encode_images_tensor (the gradient failure search's path) gives encode_images' vectors, with a graph."""
    import torch

    imgs = scenes_batch.images[:4]
    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    z = torch.nn.functional.normalize(enc.encode_images_tensor(x), dim=-1)
    assert (z.detach().numpy() * enc.encode_images(imgs)).sum(1).min() > 0.98
    (g,) = torch.autograd.grad(z[:, 0].sum(), [x])
    assert g.abs().sum() > 0 and not any(p.grad is not None for p in enc.model.parameters())
