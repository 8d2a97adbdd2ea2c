"""SSIM equals scikit-image's (Gaussian window, sigma 1.5, population covariance, data_range 1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data
from skimage.metrics import structural_similarity

from avatar_jax.errors import InputError
from avatar_jax.eval.ssim import ssim, ssim_map

SKIMAGE = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)


@pytest.fixture(scope="module")
def pair():
    a = data.astronaut()[40:136, 160:272].astype(np.float32) / 255.0  # 96 x 112, the face
    rng = np.random.default_rng(0)
    b = np.clip(a + 0.08 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    c = np.roll(a, 3, axis=1)  # a known shift
    return a, b, c


def test_ssim_equals_scikit_image(pair):
    a, b, c = pair
    for other in (b, c, a):
        # scikit-image on float64 copies: its own float32 path is itself ~2e-5 off per pixel
        ref, full = structural_similarity(a.astype(np.float64), other.astype(np.float64), full=True, **SKIMAGE)
        assert abs(float(ssim(jnp.asarray(a), jnp.asarray(other))) - ref) < 1e-4
        np.testing.assert_allclose(np.asarray(ssim_map(jnp.asarray(a), jnp.asarray(other))), full.mean(-1),
                                   atol=1e-4)
    assert abs(float(ssim(jnp.asarray(a), jnp.asarray(a))) - 1.0) < 1e-6


def test_ssim_batched_and_differentiable(pair):
    a, b, c = pair
    batch = jnp.stack([jnp.asarray(b), jnp.asarray(c)])
    out = jax.jit(ssim)(jnp.stack([jnp.asarray(a)] * 2), batch)
    assert out.shape == (2,)
    np.testing.assert_allclose(np.asarray(out), [structural_similarity(a, x, **SKIMAGE) for x in (b, c)], atol=1e-4)
    g = jax.grad(lambda x: ssim(x, jnp.asarray(a)))(jnp.asarray(b))
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0


def test_ssim_bad_input():
    with pytest.raises(InputError, match="one shape"):
        ssim(jnp.zeros((16, 16, 3)), jnp.zeros((16, 17, 3)))
    with pytest.raises(InputError, match="at least 11x11"):
        ssim(jnp.zeros((8, 8, 3)), jnp.zeros((8, 8, 3)))
    with pytest.raises(InputError, match="data_range"):
        ssim(jnp.zeros((16, 16, 3)), jnp.zeros((16, 16, 3)), data_range=0.0)
