"""FID: the Inception port against pytorch-fid (narrow random network, golden files), the Frechet distance
against pytorch-fid's calculate_frechet_distance, known cases, and the missing-weights error."""

import os

import numpy as np
import pytest

from avatar_jax.eval import fid as fid_lib
from avatar_jax.eval import inception
from avatar_jax.eval.weights import MissingWeightsError

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "data", "fid_inception")


@pytest.fixture(scope="module")
def io():
    return dict(np.load(os.path.join(GOLDEN, "io.npz")))


@pytest.fixture(scope="module")
def model():
    return inception.load_inception(os.path.join(GOLDEN, "pt_inception.pth"))


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def test_resize_equals_torch_bilinear():
    # F.interpolate(align_corners=False) of a ramp: the closed form, up and down, clamped at the edges
    x = np.arange(10, dtype=np.float32)
    up = inception._resize_matrix(10, 25) @ x
    src = np.clip((np.arange(25) + 0.5) * 10 / 25 - 0.5, 0, 9)
    np.testing.assert_allclose(up, src, atol=1e-5)
    down = inception._resize_matrix(10, 4) @ x
    np.testing.assert_allclose(down, (np.arange(4) + 0.5) * 2.5 - 0.5, atol=1e-5)


def test_inception_features_match_pytorch_fid(io, model):
    large = np.repeat(np.repeat(io["large_low"], 8, axis=2), 8, axis=3)
    for images, expected in ((io["small"], io["feat_small"]), (large, io["feat_large"])):
        ours = fid_lib.inception_features(model, _nhwc(images))
        assert ours.shape == expected.shape == (len(images), 2048 // 16)
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_frechet_distance_equals_pytorch_fid(io):
    a, b = fid_lib.statistics(io["a"]), fid_lib.statistics(io["b"])
    assert fid_lib.frechet_distance(*a, *b) == pytest.approx(float(io["fd"]), rel=1e-8)
    c, d = fid_lib.statistics(io["c"]), fid_lib.statistics(io["d"])
    assert fid_lib.frechet_distance(*c, *d) == pytest.approx(float(io["fd_singular"]), rel=1e-5)


def test_frechet_distance_known_cases():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 4))
    s = fid_lib.statistics(x)
    assert fid_lib.frechet_distance(*s, *s) == pytest.approx(0.0, abs=1e-6)
    shifted = fid_lib.statistics(x + np.array([3.0, 0, 0, 4.0]))
    assert fid_lib.frechet_distance(*s, *shifted) == pytest.approx(25.0, rel=1e-6)  # |shift|², same covariance
    # two isotropic Gaussians: d² = D (s1 - s2)²
    assert fid_lib.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), 4 * np.eye(3)) == pytest.approx(3.0)


def test_fid_of_identical_sets_is_zero_and_grows_with_a_change(model):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(8, 40, 40, 3), dtype=np.uint8)
    feats = fid_lib.inception_features(model, imgs)
    assert fid_lib.fid(imgs, imgs, model=model) == pytest.approx(0.0, abs=1e-6 * float(np.abs(feats).max()) ** 2)
    ref = fid_lib.statistics(feats)
    dimmer = []
    for f in (0.8, 0.4):
        s = fid_lib.statistics(fid_lib.inception_features(model, (imgs * f).astype(np.uint8)))
        dimmer.append(fid_lib.frechet_distance(*ref, *s))
    print("FID of the same set dimmed to 0.8 / 0.4:", dimmer)
    assert 0 < dimmer[0] < dimmer[1]


def test_missing_inception_weights_names_the_file(tmp_path):
    with pytest.raises(MissingWeightsError, match="pt_inception-2015-12-05"):
        fid_lib.fid(np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 8, 3)), weights=tmp_path / "missing.pth")
