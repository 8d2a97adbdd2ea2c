"""Shared definitions of the tile compositing kernels: feature layout, constants, pixel coordinates.

Every chunk holds ``C`` Gaussians of one 16x16 tile, front to back. A Gaussian is described by
``NUM_FEATURES`` floats in this order (the same order is used for the per-Gaussian gradients):

    0 mean_x  1 mean_y  2 conic_a  3 conic_b  4 conic_c  5 opacity  6 red  7 green  8 blue  9 depth

Padding slots have opacity 0, so they never pass the ``alpha >= 1/255`` test and need no mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

TILE = 16
PIXELS = TILE * TILE
NUM_FEATURES = 10
MX, MY, CA, CB, CC, OP, CR, CG, CBL, DZ = range(NUM_FEATURES)

ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4


def tile_pixel_centres(tile: jax.Array, tiles_x: int, tiles_per_camera: int, size: int = TILE
                       ) -> tuple[jax.Array, jax.Array]:
    """Pixel centres ``(u, v)`` of ``size``-pixel tile(s) ``tile (...)`` -> two ``(..., size^2)`` arrays, row-major."""
    local = tile % tiles_per_camera
    ty, tx = local // tiles_x, local % tiles_x
    p = jnp.arange(size * size, dtype=jnp.int32)
    u = (tx[..., None] * size + p % size).astype(jnp.float32) + 0.5
    v = (ty[..., None] * size + p // size).astype(jnp.float32) + 0.5
    return u, v
