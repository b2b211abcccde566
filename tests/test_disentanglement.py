"""Disentanglement scores (MIG, DCI, InfoMEC) on synthetic factors whose answers are known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backends.errors import InputError
from backends.generative import disentanglement as dis

N = 600


@pytest.fixture(scope="module")
def factors():
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, 4, N), rng.integers(0, 3, N), rng.integers(0, 5, N)], 1)


@pytest.fixture(scope="module")
def identity(factors):
    """Each latent is one factor (plus a little noise): perfectly disentangled."""
    return factors + 0.05 * np.random.default_rng(1).standard_normal(factors.shape)


def test_latents_that_are_the_factors_score_near_one(factors, identity):
    s = dis.scores(identity, factors)
    assert set(s) == set(dis.NAMES)
    for k in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "infom", "infoc"):
        assert s[k] > 0.9, (k, s)
    assert s["infoe"] > 0.8, s  # a (regularised) linear readout of an ordinal code is not sharp


def test_a_rotation_that_mixes_the_factors_scores_clearly_lower(factors, identity):
    q = np.linalg.qr(np.random.default_rng(2).standard_normal((3, 3)))[0]
    ident, rot = dis.scores(identity, factors), dis.scores(identity @ q, factors)
    for k in ("mig", "dci_disentanglement", "dci_completeness", "infom", "infoc"):
        assert rot[k] < ident[k] - 0.4, (k, rot[k], ident[k])
    assert rot["dci_informativeness"] > 0.9  # the information is all there, only mixed


def test_latents_independent_of_the_factors_score_near_zero(factors):
    z = np.random.default_rng(3).standard_normal((N, 3))
    s = dis.scores(z, factors)
    assert s["mig"] < 0.05 and s["infoe"] < 0.05 and s["infom"] < 0.2, s
    chance = np.mean([np.bincount(c).max() / N for c in factors.T])
    assert abs(s["dci_informativeness"] - chance) < 0.08, (s, chance)


def test_a_duplicated_latent_costs_compactness_not_modularity(factors, identity):
    dup = np.c_[identity, identity[:, :1] + 0.01 * np.random.default_rng(4).standard_normal((N, 1))]
    a, b = dis.scores(identity, factors), dis.scores(dup, factors)
    assert b["infoc"] < a["infoc"] - 0.15 and b["dci_completeness"] < a["dci_completeness"] - 0.1, (a, b)
    assert b["infom"] > 0.9 and b["dci_disentanglement"] > 0.9, b
    assert b["mig"] < a["mig"] - 0.25  # factor 1's gap closes: two latents hold it


def test_labels_as_text_and_uninformative_factors(identity, factors):
    names = np.array(["red", "green", "blue", "cyan", "pink"], dtype=object)
    table = pd.DataFrame({"shape": names[factors[:, 0]], "colour": names[factors[:, 1]],
                          "size": names[factors[:, 2]], "world": "shapes"})  # one value: left out
    s = dis.scores(identity, table)
    assert s == pytest.approx(dis.scores(identity, factors), abs=1e-9)  # the same up to the order of codes
    assert dis.mig(identity, table) == pytest.approx(s["mig"])
    assert dis.infomec(identity, table)["infoc"] == pytest.approx(s["infoc"])
    assert dis.dci(identity, table)["completeness"] == pytest.approx(s["dci_completeness"])
    one = dis.scores(identity[:, :1], factors[:, :1])  # one latent, one factor: trivially (dis)entangled
    assert one["dci_disentanglement"] == one["dci_completeness"] == one["infom"] == one["infoc"] == 1.0


@pytest.mark.parametrize("z, f, message", [
    (np.zeros((N, 2)), np.zeros((N - 1, 1)), "samples but factors"),
    (np.full((N, 2), np.nan), np.zeros((N, 1)), "NaN"),
    (np.zeros((4, 2)), np.arange(4)[:, None], "at least 8 samples"),
    (np.zeros((N, 2, 2)), np.zeros((N, 1)), "shape"),
    (np.zeros((N, 2)), np.zeros((N, 1)), "single value"),
    (np.zeros((N, 2)), np.array([None] * N)[:, None], "missing"),
])
def test_bad_inputs_get_clear_messages(z, f, message):
    with pytest.raises(InputError, match=message):
        dis.scores(z, f)
