"""Peak signal-to-noise ratio of frames, optionally inside a mask (e.g. the person mask).

``PSNR = 10 log10(L^2 / MSE)`` with ``L = data_range``; the MSE is over pixels and channels of each
image (masked: weighted by the mask, so a soft mask counts pixels fractionally). Identical images give
``inf``, as in scikit-image's ``peak_signal_noise_ratio``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from avatar_jax.errors import InputError


def mse(a: jax.Array, b: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean squared error ``(...)`` of images ``(..., H, W, C)``; ``mask (..., H, W)`` in [0,1] or None."""
    if a.shape != b.shape or a.ndim < 3:
        raise InputError(f"PSNR needs two (..., H, W, C) arrays of one shape, got {a.shape} and {b.shape}")
    err = jnp.mean((a.astype(jnp.float32) - b.astype(jnp.float32)) ** 2, axis=-1)  # (..., H, W)
    if mask is None:
        return jnp.mean(err, axis=(-2, -1))
    if mask.shape != a.shape[:-1]:
        raise InputError(f"PSNR mask must be {a.shape[:-1]} (the images without channels), got {mask.shape}")
    m = mask.astype(jnp.float32)
    # An empty mask has no pixels to score: NaN, not a division by zero passed off as a number.
    total = jnp.sum(m, axis=(-2, -1))
    return jnp.where(total > 0, jnp.sum(m * err, axis=(-2, -1)) / jnp.where(total > 0, total, 1.0), jnp.nan)


def psnr(a: jax.Array, b: jax.Array, mask: jax.Array | None = None, data_range: float = 1.0) -> jax.Array:
    """PSNR in dB ``(...)`` per image of ``(..., H, W, C)`` arrays (``inf`` when identical)."""
    if data_range <= 0:
        raise InputError(f"PSNR data_range must be positive, got {data_range}")
    e = mse(a, b, mask)
    value = jnp.where(e > 0, 10.0 * jnp.log10(data_range**2 / jnp.where(e > 0, e, 1.0)), jnp.inf)
    return jnp.where(jnp.isnan(e), jnp.nan, value)  # an empty mask stays NaN
