"""Zero-shot stitching: heads trained on A's relative space read B's (synthetic spaces, digits, Shapes)."""
import numpy as np
import pytest

from backends.errors import InputError
from backends.representations import relative as rel
from backends.representations import stitching as st

FAST = st.HeadConfig()  # the defaults: 10 epochs, seconds per head


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    torch.set_num_threads(1)


def table_dict(setup):
    return {(r["encoder"][0], r["head"][0]): r for r in st.stitching_table(setup)}


def test_registry_lists_the_spaces_with_reasons():
    spaces = {s["name"]: s for s in st.available_spaces()}
    for name in ("shapes-cnn", "shapes-vit", "minilm-captions", "openclip", "digits-map-a", "digits-map-b",
                 "blobs", "blobs-rotated"):
        assert name in spaces
    assert spaces["blobs"]["unavailable"] is None
    assert "LATENT_ATLAS_OPENCLIP" in (spaces["openclip"]["unavailable"] or "LATENT_ATLAS_OPENCLIP")
    with pytest.raises(InputError, match="Unknown space"):
        st.get_space("nope")


def test_rotated_blobs_stitch_perfectly_relative_and_fail_absolute():
    pair = st.load_pair("blobs", "blobs-rotated")
    anchors = st.pair_anchors(pair, 100, strategy="kmeans")
    setup = st.prepare(pair, anchors, "label", config=FAST)
    t = table_dict(setup)
    chance = st.chance_accuracy(pair, "label")
    assert t["A", "A"]["relative"] > 0.95 and t["B", "B"]["absolute"] > 0.95
    for enc, head in (("A", "B"), ("B", "A")):
        assert t[enc, head]["relative"] >= t[head, head]["relative"] - 0.02
        assert t[enc, head]["procrustes"] >= t[head, head]["absolute"] - 0.02
        assert t[enc, head]["absolute"] < chance + 0.15


def test_digits_through_two_random_networks_stitch_relative():
    pair = st.load_pair("digits-map-a", "digits-map-b")
    anchors = st.pair_anchors(pair, 300, strategy="random")
    setup = st.prepare(pair, anchors, "label", config=FAST)
    t = table_dict(setup)
    chance = st.chance_accuracy(pair, "label")
    assert t["A", "A"]["relative"] > 0.9
    for enc, head in (("A", "B"), ("B", "A")):
        assert t[enc, head]["relative"] > 0.75
        assert t[enc, head]["absolute"] < chance + 0.15
    m = rel.compare(pair.x_a, pair.x_b, anchors, k=10)
    assert m["relative"]["jaccard"] > m["absolute"]["jaccard"] + 0.2
    assert m["relative"]["mrr"] > m["absolute"]["mrr"] + 0.3


def test_heads_are_cached_as_safetensors_and_reloaded(tmp_path):
    from backends.cache import ArtifactCache

    cache = ArtifactCache(tmp_path)
    pair = st.load_pair("blobs", "blobs-rotated")
    anchors = st.pair_anchors(pair, 40, strategy="random")
    first = st.prepare(pair, anchors, "label", config=st.HeadConfig(epochs=3), cache=cache)
    files = sorted((tmp_path / "stitching").glob("*.safetensors"))
    assert len(files) == 4
    second = st.prepare(pair, anchors, "label", config=st.HeadConfig(epochs=3), cache=cache)
    x = first.rel_["B"][pair.test]
    np.testing.assert_allclose(first.heads["relative", "A"].predict(x), second.heads["relative", "A"].predict(x),
                               atol=1e-6)
    assert sorted((tmp_path / "stitching").glob("*.safetensors")) == files


def test_single_item_is_classified_against_a_reference_batch():
    pair = st.load_pair("blobs", "blobs-rotated")
    setup = st.prepare(pair, st.pair_anchors(pair, 60), "label", config=FAST)
    te = pair.test[:40]
    batch = st.classify_vectors(setup, pair.x_b[te], encoder="B", head="A")
    one = np.stack([st.classify_vectors(setup, pair.x_b[i:i + 1], encoder="B", head="A")[0] for i in te])
    assert batch.shape == (40, len(setup.heads["relative", "A"].classes))
    labels = np.asarray(setup.heads["relative", "A"].classes)
    assert np.mean(labels[one.argmax(1)] == pair.label_values("label")[te]) > 0.9
    with pytest.raises(InputError, match="at least 2 items"):
        setup.heads["relative", "A"].predict(setup.rel_["A"][:1])


def test_a_decoder_trained_on_a_renders_from_b_relative_vectors():
    pair = st.load_pair("digits-map-a", "digits-map-b")
    anchors = st.pair_anchors(pair, 300)
    setup = st.StitchingSetup(pair, anchors, "label", rel_=dict(zip("AB", st.relative_pair(pair, anchors))))
    st.prepare_decoder(setup, "A", config=st.HeadConfig(epochs=15, lr=1e-3))
    native = st.decoding_error(setup, encoder="A", decoder="A")
    stitched = st.decoding_error(setup, encoder="B", decoder="A")
    mean_image = np.mean((pair.images[pair.test] / 255 - pair.images[pair.train].mean(0) / 255) ** 2)
    assert native < stitched < 0.6 * mean_image, (native, stitched, mean_image)
    img = st.decode_stitched(setup, [pair.test[0]], encoder="B", decoder="A")
    assert img.shape == (1, 8, 8, 3) and img.dtype == np.uint8


@pytest.mark.parametrize("call,message", [
    (lambda: st.load_pair("blobs", "digits-map-a"), "same world"),
    (lambda: st.pair_from_arrays(np.ones((10, 3)) * np.arange(3), np.ones((12, 3)), name_a="a", name_b="b"),
     "has 10 items but space B \\(b\\) has 12"),
    (lambda: st.pair_anchors(st.load_pair("blobs", "blobs-rotated"), 1), "at least 2 anchors"),
    (lambda: st.prepare(st.load_pair("blobs", "blobs-rotated"), [0, 99_999], "label"), "99999 is not in the corpus"),
    (lambda: st.prepare(st.load_pair("blobs", "blobs-rotated"), [0, 1, 2], "colour"), "label 'colour'"),
])
def test_bad_input_gets_a_clear_message(call, message):
    with pytest.raises(InputError, match=message):
        call()


# ---------------------------------------------------------------------------------------
# The paper's finding, on the Shapes world's two encoders (CNN and ViT, different seeds)


SHAPES_LABELS = ("shape", "colour", "size", "position")


@pytest.fixture(scope="module")
def shapes_pair():
    reasons = [s["unavailable"] for s in st.available_spaces() if s["name"] in ("shapes-cnn", "shapes-vit")]
    if any(reasons):
        pytest.skip(f"Shapes encoder weights are absent from assets/shapes/: {reasons[0] or reasons[1]}")
    pair = st.load_pair("shapes-cnn", "shapes-vit")
    return pair, st.pair_anchors(pair, 300, strategy="random", seed=0), {}


def shapes_table(shapes_pair, label):
    pair, anchors, tables = shapes_pair
    if label not in tables:
        tables[label] = table_dict(st.prepare(pair, anchors, label))
    return tables[label]


@pytest.mark.parametrize("label", SHAPES_LABELS)
def test_shapes_relative_stitching_is_within_10_points_of_the_native_head(shapes_pair, label):
    t = shapes_table(shapes_pair, label)
    for enc, head in (("A", "B"), ("B", "A")):  # encoder → head; the native head is head → head
        assert t[enc, head]["relative"] >= t[head, head]["relative"] - 0.10, t


@pytest.mark.parametrize("label", SHAPES_LABELS)
def test_shapes_absolute_stitching_is_near_chance(shapes_pair, label):
    pair = shapes_pair[0]
    t = shapes_table(shapes_pair, label)
    chance = st.chance_accuracy(pair, label)
    for enc, head in (("A", "B"), ("B", "A")):
        assert t[enc, head]["absolute"] <= chance + 0.10, (t, chance)
        assert t[head, head]["absolute"] > chance + 0.5  # the heads themselves work


def test_shapes_relative_neighbourhoods_agree_far_more_than_absolute(shapes_pair):
    pair, anchors, _ = shapes_pair
    m = rel.compare(pair.x_a, pair.x_b, anchors, k=10)
    assert m["relative"]["jaccard"] >= m["absolute"]["jaccard"] + 0.3, m
    assert m["relative"]["mrr"] > m["absolute"]["mrr"] + 0.3, m


def test_space_vectors_are_kept_in_the_disk_cache_until_the_weights_change(tmp_path):
    """A later server start switches to a space by reading its vectors, not by encoding the world
    again; new weights (a new fingerprint) are encoded anew."""
    from backends.cache import ArtifactCache

    calls, version = [], ["w1"]

    def embed(world):
        calls.append(version[0])
        return np.random.default_rng(len(calls)).normal(size=(len(world.meta), 4)).astype(np.float32)

    name = "test-cached-space"
    st.register_space(st.Space(name, "blobs", "a space whose embedding is counted", embed=embed,
                               fingerprint=lambda: version[0]))
    cache = ArtifactCache(tmp_path)
    try:
        first = st.space_vectors(name, cache)
        st._VEC_CACHE.pop(name)  # a new process: nothing in memory
        again = st.space_vectors(name, cache)
        assert calls == ["w1"]
        np.testing.assert_array_equal(first, again)
        st._VEC_CACHE.pop(name)
        version[0] = "w2"
        st.space_vectors(name, cache)
        assert calls == ["w1", "w2"]
        assert name in st.warm_spaces(cache)
    finally:
        st._SPACES.pop(name, None)
        st._VEC_CACHE.pop(name, None)


def test_the_shapes_spaces_can_be_kept_on_disk():
    st._plugins()
    for name in ("shapes-cnn", "shapes-vit", "minilm-captions", "shapes-cnn-text", "shapes-vit-text"):
        space = st.get_space(name)
        if space.unavailable():
            continue
        assert space.fingerprint is not None and space.fingerprint()
