"""Structural similarity (Wang et al. 2004) in differentiable jnp, shared by the losses and evaluation.

The definition is scikit-image's ``structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=-1)``: an 11-tap Gaussian window (sigma 1.5,
truncated at 3.5 sigma, weights summing to 1), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with
``L = data_range``, population (co)variances, the SSIM map averaged over channels and, for the scalar,
over the pixels at least 5 pixels from the border (scikit-image crops that margin because its
filter reflects the image there). :func:`ssim_map` gives the full-size map (reflect padding, as
``scipy.ndimage``) for masked losses.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.errors import InputError

SIGMA = 1.5
TRUNCATE = 3.5
RADIUS = int(TRUNCATE * SIGMA + 0.5)  # 5 -> an 11-tap window
K1, K2 = 0.01, 0.03


def gaussian_window(sigma: float = SIGMA, radius: int = RADIUS) -> np.ndarray:
    """1D Gaussian taps ``(2 radius + 1,)`` summing to 1 (``scipy.ndimage.gaussian_filter1d``'s)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)


def _blur(x: jax.Array, padding: str) -> jax.Array:
    """Separable Gaussian blur of ``x (B,H,W)`` -> ``(B,H,W)`` ('same', reflect) or ``(B,H-10,W-10)`` ('valid')."""
    taps = jnp.asarray(gaussian_window())
    if padding == "same":
        # scipy's 'reflect' repeats the edge pixel (d c b a | a b c d), which is numpy's 'symmetric'.
        x = jnp.pad(x, ((0, 0), (RADIUS, RADIUS), (RADIUS, RADIUS)), mode="symmetric")
    # Two 1D convolutions (one XLA op each, cheap to compile and differentiate).
    y = x[:, None].astype(jnp.float32)  # (B, 1, H, W)
    for kernel in (taps[:, None], taps[None, :]):
        y = jax.lax.conv_general_dilated(y, kernel[None, None], (1, 1), "VALID",
                                         precision=jax.lax.Precision.HIGHEST)
    return y[:, 0]


def _check(a: jax.Array, b: jax.Array, data_range: float) -> None:
    if not math.isfinite(data_range) or data_range <= 0:
        raise InputError(f"SSIM data_range must be a positive number, got {data_range}")
    if a.shape != b.shape:
        raise InputError(f"SSIM needs images of one shape, got {a.shape} and {b.shape}")
    if a.ndim < 3:
        raise InputError(f"SSIM expects (..., H, W, C) images, got shape {a.shape}")
    if min(a.shape[-3], a.shape[-2]) < 2 * RADIUS + 1:
        raise InputError(f"SSIM needs images of at least {2 * RADIUS + 1}x{2 * RADIUS + 1} pixels, "
                         f"got {a.shape[-3]}x{a.shape[-2]}")


def _ssim_channels(a: jax.Array, b: jax.Array, data_range: float, padding: str) -> jax.Array:
    """Per-pixel SSIM ``(..., H', W')`` averaged over channels of ``(..., H, W, C)`` images."""
    lead, (height, width, chans) = a.shape[:-3], a.shape[-3:]
    # Channels become batch entries: (..., H, W, C) -> (B*C, H, W).
    def flat(x):
        return jnp.moveaxis(x.astype(jnp.float32), -1, -3).reshape((-1, height, width))

    x, y = flat(a), flat(b)
    # (Co)variances are shift invariant: centring each image first keeps E[x^2] - E[x]^2 from
    # cancelling catastrophically in float32.
    mean_x, mean_y = jnp.mean(x, axis=(1, 2), keepdims=True), jnp.mean(y, axis=(1, 2), keepdims=True)
    x, y = x - mean_x, y - mean_y
    bx, by = _blur(x, padding), _blur(y, padding)
    var_x = _blur(x * x, padding) - bx * bx
    var_y = _blur(y * y, padding) - by * by
    cov = _blur(x * y, padding) - bx * by
    mu_x, mu_y = bx + mean_x, by + mean_y
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    s = s.reshape(lead + (chans,) + s.shape[-2:])
    return jnp.mean(s, axis=-3)


def ssim_map(a: jax.Array, b: jax.Array, data_range: float = 1.0) -> jax.Array:
    """Full-size SSIM map ``(..., H, W)`` of images ``(..., H, W, C)`` (mean over channels)."""
    _check(a, b, data_range)
    return _ssim_channels(a, b, data_range, "same")


def ssim(a: jax.Array, b: jax.Array, data_range: float = 1.0) -> jax.Array:
    """Mean SSIM ``(...)`` of images ``(..., H, W, C)``, equal to scikit-image's (see module docstring)."""
    _check(a, b, data_range)
    return jnp.mean(_ssim_channels(a, b, data_range, "valid"), axis=(-2, -1))

