"""Pallas forward kernel: front-to-back compositing of each 16x16 tile, one Gaussian at a time.

Two launch layouts share one per-chunk body (:func:`composite_chunk`):

* ``platform="tpu"`` (Mosaic): the grid runs over *chunks* in order. Scalar-prefetched
  ``chunk_tile``/``chunk_k`` send every chunk's output block to its tile; consecutive chunks of one
  tile revisit the same output block, which stays in VMEM and carries the pixel state (the TPU
  accumulator pattern: no atomics, grid axis sequential). A tile with 10,000 Gaussians is simply
  many consecutive grid steps.
* ``platform="gpu"`` (Triton): the grid runs over *tiles* (independent programs); each program loops
  over its own chunks with a dynamic trip count read from ``tile_first``/``tile_chunks``.

Per pixel the output rows are ``0..2`` colour, ``3`` depth, ``4`` transmittance, ``5`` the 1-based
position in the tile's list of the last Gaussian composited (what the backward kernel needs) and
``6`` a "stopped" flag. Features come in as ``(Kc, 16, C)``: feature rows of
:mod:`avatar_jax.kernels.splat_common` (rows 10..15 unused), one Gaussian per lane.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from avatar_jax.kernels.splat_common import (
    ALPHA_MAX,
    ALPHA_MIN,
    CA,
    CB,
    CBL,
    CC,
    CG,
    CR,
    DZ,
    MX,
    MY,
    NUM_FEATURES,
    OP,
    PIXELS,
    T_MIN,
    TILE,
)
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

ROWS = 8  # output rows per pixel (see module docstring)
FEATURE_ROWS = 16  # NUM_FEATURES padded to a sublane multiple
FLOPS_PER_PAIR = 30  # alpha (conic form, clamp, test) and the compositing update, per Gaussian-pixel pair


def cost(kc: int, chunk: int, num_tiles: int) -> pl.CostEstimate:
    """What the forward kernel does for ``kc`` chunks of ``chunk`` Gaussians (for XLA's cost analysis)."""
    pairs = kc * chunk * PIXELS
    bytes_in = kc * FEATURE_ROWS * chunk * 4 + 2 * kc * 4
    return pl.CostEstimate(flops=int(FLOPS_PER_PAIR * pairs), transcendentals=int(pairs),
                           bytes_accessed=int(bytes_in + num_tiles * ROWS * PIXELS * 4))


def to_kernel_layout(feats: jax.Array) -> jax.Array:
    """``(Kc, C, 10)`` -> ``(Kc, 16, C)`` (one Gaussian per lane)."""
    pad = FEATURE_ROWS - NUM_FEATURES
    return jnp.pad(jnp.swapaxes(feats, 1, 2), ((0, 0), (0, pad), (0, 0))).astype(jnp.float32)


def pixel_centres(tile, tiles_x: int, tiles_per_camera: int, shape):
    """Pixel centres of ``tile`` (a traced scalar) as float arrays of ``shape`` (last dim 256)."""
    # lax.rem/div rather than % and //: tiles are non-negative, and Python's floor semantics
    # would need a sign op that Mosaic only lowers for a known TPU generation.
    local = jax.lax.rem(tile, tiles_per_camera)
    tx, ty = jax.lax.rem(local, tiles_x), jax.lax.div(local, tiles_x)
    p = jax.lax.broadcasted_iota(jnp.int32, shape, len(shape) - 1)
    u = (tx * TILE + (p & (TILE - 1))).astype(jnp.float32) + 0.5
    v = (ty * TILE + (p >> 4)).astype(jnp.float32) + 0.5
    return u, v


def pick(row: jax.Array, lane: jax.Array, g) -> jax.Array:
    """Element ``g`` of a feature row as a broadcastable value (a masked lane reduction: portable)."""
    keep = row.ndim == 2
    return jnp.sum(jnp.where(lane == g, row, 0.0), axis=-1, keepdims=keep)


def gaussian_alpha(f, u, v):
    """``alpha`` (skip rule applied), the unclamped ``o*G``, ``G``, ``dx``, ``dy`` over a pixel row."""
    dx, dy = u - f[MX], v - f[MY]
    sigma = -0.5 * (f[CA] * dx * dx + f[CC] * dy * dy) - f[CB] * dx * dy
    gauss = jnp.exp(sigma)
    raw = f[OP] * gauss
    alpha = jnp.minimum(ALPHA_MAX, raw)
    return jnp.where(alpha >= ALPHA_MIN, alpha, 0.0), raw, gauss, dx, dy


def composite_chunk(rows, state, u, v, base, chunk: int):
    """Composite the ``chunk`` Gaussians of one block (front to back) into the pixel ``state``.

    ``rows``: ``NUM_FEATURES`` feature rows of ``chunk`` lanes; ``state``: tuple
    ``(r, g, b, depth, T, last, stopped)`` of pixel rows; ``base``: list position of lane 0.
    """
    lane = jax.lax.broadcasted_iota(jnp.int32, rows[0].shape, rows[0].ndim - 1)

    def body(g, st):
        r, gr, b, d, t, last, stop = st
        f = [pick(row, lane, g) for row in rows]
        alpha, _, _, _, _ = gaussian_alpha(f, u, v)
        use = (alpha > 0.0) & (stop == 0.0)
        t_next = t * (1.0 - alpha)
        halt = use & (t_next < T_MIN)
        use = use & ~halt
        w = jnp.where(use, alpha * t, 0.0)
        return (r + w * f[CR], gr + w * f[CG], b + w * f[CBL], d + w * f[DZ], jnp.where(use, t_next, t),
                jnp.where(use, (base + g + 1).astype(jnp.float32), last), jnp.where(halt, 1.0, stop))

    return jax.lax.fori_loop(0, chunk, body, tuple(state))


def _init_state(shape):
    zero = jnp.zeros(shape, jnp.float32)
    return (zero, zero, zero, zero, jnp.ones(shape, jnp.float32), zero, zero)


def _tpu_kernel(tile_ref, k_ref, f_ref, o_ref, *, chunk, tiles_x, tiles_per_camera):
    c = pl.program_id(0)
    k = k_ref[c]

    @pl.when(k == 0)
    def _():
        for j, row in enumerate(_init_state((1, PIXELS))):
            o_ref[0, j:j + 1, :] = row

    @pl.when(k >= 0)
    def _():
        u, v = pixel_centres(tile_ref[c], tiles_x, tiles_per_camera, (1, PIXELS))
        rows = [f_ref[0, j:j + 1, :] for j in range(NUM_FEATURES)]
        state = [o_ref[0, j:j + 1, :] for j in range(7)]
        state = composite_chunk(rows, state, u, v, k * chunk, chunk)
        for j, row in enumerate(state):
            o_ref[0, j:j + 1, :] = row


def _gpu_kernel(first_ref, count_ref, f_ref, o_ref, *, chunk, tiles_x, tiles_per_camera):
    t = pl.program_id(0)
    u, v = pixel_centres(t, tiles_x, tiles_per_camera, (PIXELS,))
    first, count = first_ref[t], count_ref[t]

    def per_chunk(k, state):
        rows = [f_ref[first + k, j, :] for j in range(NUM_FEATURES)]
        return composite_chunk(rows, state, u, v, k * chunk, chunk)

    state = jax.lax.fori_loop(0, count, per_chunk, _init_state((PIXELS,)))
    for j, row in enumerate(state):
        o_ref[0, j, :] = row


def tile_runs(chunk_tile, chunk_k, num_tiles: int):
    """First chunk and number of chunks of every tile, ``(T,)`` int32 each."""
    used = chunk_k >= 0
    count = jax.ops.segment_sum(used.astype(jnp.int32), chunk_tile, num_segments=num_tiles)
    first = jnp.cumsum(count) - count
    return first.astype(jnp.int32), count.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("tiles_x", "tiles_per_camera", "num_tiles", "platform", "interpret"))
def forward_raw(fk, chunk_tile, chunk_k, *, tiles_x, tiles_per_camera, num_tiles, platform, interpret):
    """Kernel-layout forward: ``fk (Kc,16,C)`` -> pixel rows ``(T, 8, 256)``."""
    kc, _, chunk = fk.shape
    out_shape = jax.ShapeDtypeStruct((num_tiles, ROWS, PIXELS), jnp.float32)
    if platform == "tpu":
        kernel = functools.partial(_tpu_kernel, chunk=chunk, tiles_x=tiles_x, tiles_per_camera=tiles_per_camera)
        grid_spec = pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=2,
            grid=(kc,),
            in_specs=[pl.BlockSpec((1, FEATURE_ROWS, chunk), lambda c, tile, k: (c, 0, 0))],
            out_specs=pl.BlockSpec((1, ROWS, PIXELS), lambda c, tile, k: (tile[c], 0, 0)),
        )
        return pl.pallas_call(
            kernel, grid_spec=grid_spec, out_shape=out_shape, interpret=interpret,
            compiler_params=pltpu.CompilerParams(dimension_semantics=("arbitrary",)),
            cost_estimate=cost(kc, chunk, num_tiles),
        )(chunk_tile, chunk_k, fk)
    if platform == "gpu":
        first, count = tile_runs(chunk_tile, chunk_k, num_tiles)
        kernel = functools.partial(_gpu_kernel, chunk=chunk, tiles_x=tiles_x, tiles_per_camera=tiles_per_camera)
        return pl.pallas_call(
            kernel, grid=(num_tiles,), out_shape=out_shape, interpret=interpret,
            in_specs=[pl.no_block_spec, pl.no_block_spec, pl.no_block_spec],
            out_specs=pl.BlockSpec((1, ROWS, PIXELS), lambda t: (t, 0, 0)),
            cost_estimate=cost(kc, chunk, num_tiles),
        )(first, count, fk)
    raise ValueError(f"unknown Pallas platform {platform!r}; expected 'tpu' or 'gpu'")


def forward(feats, chunk_tile, chunk_k, n_chunks, *, tiles_x, tiles_per_camera, num_tiles, platform, interpret):
    """Same contract as :func:`avatar_jax.kernels.splat_xla.forward` minus residuals, plus ``last (T,256)``."""
    del n_chunks  # unused chunks have chunk_k == -1 and are skipped by both layouts
    out = forward_raw(to_kernel_layout(feats), chunk_tile, chunk_k, tiles_x=tiles_x,
                      tiles_per_camera=tiles_per_camera, num_tiles=num_tiles, platform=platform, interpret=interpret)
    colour = jnp.swapaxes(out[:, 0:3, :], 1, 2)
    return colour, out[:, 3], out[:, 4], out[:, 5]
