"""FVD: the I3D port against cd-fvd's PyTorch I3D (narrow random network, golden files), the Frechet
distance against cd-fvd's, FVD on a given feature function, and the missing-weights errors."""

import os

import numpy as np
import pytest

from avatar_jax.eval import fid as fid_lib
from avatar_jax.eval import fvd as fvd_lib
from avatar_jax.eval import i3d
from avatar_jax.eval.weights import MissingWeightsError

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "data", "fvd_i3d")


@pytest.fixture(scope="module")
def io():
    return dict(np.load(os.path.join(GOLDEN, "io.npz")))


def test_same_padding_matches_the_pytorch_port_rule():
    # k=7, s=2 on 16 frames: total 5 (2 front, 3 back); on 15: max(7 - 1, 0) = 6 (3, 3); k=1: none
    assert i3d.same_padding((16, 15, 5), (7, 7, 1), (2, 2, 1)) == [(2, 3), (3, 3), (0, 0)]
    assert i3d.same_padding((8,), (3,), (1,)) == [(1, 1)]


def test_i3d_logits_match_cd_fvd(io):
    model = i3d.load_i3d(os.path.join(GOLDEN, "i3d_pretrained_400.pt"))
    videos = np.repeat(np.repeat(io["videos_low"], 8, axis=2), 8, axis=3)
    ours = i3d.i3d_features(model, videos, batch=2)
    assert ours.shape == io["logits"].shape == (2, 25)
    np.testing.assert_allclose(ours, io["logits"], rtol=1e-4, atol=1e-4 * np.abs(io["logits"]).max())


def test_frechet_distance_equals_cd_fvd(io):
    a, b = fid_lib.statistics(io["a"]), fid_lib.statistics(io["b"])
    assert fid_lib.frechet_distance(*a, *b) == pytest.approx(float(io["fd"]), rel=1e-6)


def test_fvd_on_a_feature_function():
    rng = np.random.default_rng(2)
    clips = rng.random((30, 4, 6, 6, 3))

    def feature_fn(c):  # per-clip mean colour and temporal change
        return np.concatenate([c.mean((1, 2, 3)), np.abs(np.diff(c, axis=1)).mean((1, 2, 3))], -1)

    assert fvd_lib.fvd(clips, clips, feature_fn) == pytest.approx(0.0, abs=1e-9)
    brighter = fvd_lib.fvd(clips, clips + 0.1, feature_fn)
    assert brighter == pytest.approx(3 * 0.1**2, rel=1e-6)  # mean colour moves by 0.1 in 3 channels


def test_missing_weights_name_what_to_provide(tmp_path):
    with pytest.raises(MissingWeightsError, match="i3d_pretrained_400.pt"):
        fvd_lib.fvd(np.zeros((2, 9, 8, 8, 3)), np.zeros((2, 9, 8, 8, 3)), None)
    with pytest.raises(MissingWeightsError, match="i3d_pretrained_400.pt"):
        fvd_lib.i3d_feature_fn(tmp_path / "missing.pt")
