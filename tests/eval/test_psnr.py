"""PSNR on known cases: identical frames, a known constant shift, a mask, scikit-image's value."""

import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from avatar_jax.errors import InputError
from avatar_jax.eval.psnr import psnr


def test_identical_frames_are_infinite_and_a_shift_gives_its_psnr():
    a = jnp.asarray(np.random.default_rng(0).uniform(0.2, 0.8, (3, 16, 16, 3)), jnp.float32)
    assert np.all(np.isinf(np.asarray(psnr(a, a))))
    out = np.asarray(psnr(a + 0.1, a))
    assert out.shape == (3,)
    np.testing.assert_allclose(out, 20.0, rtol=1e-5)  # MSE 0.01 -> 10 log10(1 / 0.01)
    np.testing.assert_allclose(np.asarray(psnr(a * 255 + 10, a * 255, data_range=255.0)),
                               20 * np.log10(255 / 10), rtol=1e-5)


def test_masked_psnr_scores_only_the_mask():
    a = jnp.zeros((1, 8, 8, 3))
    b = a.at[:, :, 4:].set(0.5)  # the right half differs
    mask = jnp.zeros((1, 8, 8)).at[:, :, :4].set(1.0)
    assert np.isinf(float(psnr(b, a, mask)[0]))
    np.testing.assert_allclose(float(psnr(b, a, 1.0 - mask)[0]), 10 * np.log10(1 / 0.25), rtol=1e-5)
    assert np.isnan(float(psnr(b, a, jnp.zeros((1, 8, 8)))[0]))  # nothing to score


def test_psnr_equals_scikit_image_on_a_photo():
    a = data.astronaut()[:64, :64].astype(np.float32) / 255
    b = np.clip(a + 0.05 * np.random.default_rng(1).standard_normal(a.shape), 0, 1).astype(np.float32)
    ref = peak_signal_noise_ratio(a.astype(np.float64), b.astype(np.float64), data_range=1.0)
    np.testing.assert_allclose(float(psnr(jnp.asarray(a), jnp.asarray(b))), ref, atol=1e-3)


def test_psnr_bad_input():
    with pytest.raises(InputError, match="one shape"):
        psnr(jnp.zeros((4, 4, 3)), jnp.zeros((4, 5, 3)))
    with pytest.raises(InputError, match="mask"):
        psnr(jnp.zeros((4, 4, 3)), jnp.zeros((4, 4, 3)), jnp.zeros((4, 4, 3)))
