"""Pallas backward kernel: back-to-front over each tile, recomputing transmittance by division.

For a pixel with final transmittance ``T_N`` the kernel walks the Gaussians that the forward pass
composited (positions ``< last``) from the back: ``T_i = T_{i+1} / (1 - alpha_i)``, and keeps
``R``, the colour/depth composited behind ``i`` normalised by ``T_{i+1}``. Then

    dL/dc_i = sum_p gC alpha_i T_i          dL/dz_i = sum_p gD alpha_i T_i
    dL/dalpha_i = sum_p gC.(T_i (c_i - R_c)) + gD T_i (z_i - R_z) - gT T_N / (1 - alpha_i)

and ``alpha = min(0.99, o exp(sigma))`` carries that on to the opacity, mean and conic. Every chunk
belongs to exactly one tile, so each chunk's gradient block is written once by one program: no
atomics (TPU has none); the reduction over tiles into per-Gaussian gradients happens outside, in
XLA (a segment sum through the gather's transpose).

Layouts mirror :mod:`avatar_jax.kernels.splat_forward`: on TPU the grid walks chunks in reverse
order (scalar-prefetched ``order``) and carries pixel state in a VMEM scratch; on GPU each program
owns a tile and loops over its chunks backwards.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from avatar_jax.kernels.splat_common import ALPHA_MAX, CA, CB, CBL, CC, CG, CR, DZ, NUM_FEATURES, PIXELS
from avatar_jax.kernels.splat_forward import (
    FEATURE_ROWS,
    gaussian_alpha,
    pick,
    pixel_centres,
    tile_runs,
    to_kernel_layout,
)
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

IN_ROWS = 8  # per-pixel inputs: gR gG gB gD gT T_final last (pad)
STATE_ROWS = 8  # T, R_r, R_g, R_b, R_z (pad)
FLOPS_PER_PAIR = 80  # alpha recomputed, transmittance by division, 10 gradient terms and the state update


def cost(kc: int, chunk: int, num_tiles: int) -> pl.CostEstimate:
    """What the backward kernel does for ``kc`` chunks of ``chunk`` Gaussians (for XLA's cost analysis)."""
    pairs = kc * chunk * PIXELS
    feature_bytes = kc * FEATURE_ROWS * chunk * 4
    return pl.CostEstimate(flops=int(FLOPS_PER_PAIR * pairs), transcendentals=int(2 * pairs),  # exp, 1/(1-a)
                           bytes_accessed=int(2 * feature_bytes + num_tiles * IN_ROWS * PIXELS * 4 + 5 * kc * 4))


def backprop_chunk(rows, pix_in, state, u, v, base, chunk: int):
    """Gradients of one chunk (Gaussians ``chunk-1 .. 0``) -> ``(10 gradient rows, new state)``.

    ``pix_in``: ``(gR, gG, gB, gD, gT, T_final, last)`` pixel rows; ``state``: ``(T, Rr, Rg, Rb, Rz)``.
    """
    lane = jax.lax.broadcasted_iota(jnp.int32, rows[0].shape, rows[0].ndim - 1)
    g_r, g_g, g_b, g_d, g_t, t_final, last = pix_in
    colour_grads = (g_r, g_g, g_b, g_d)
    zero_rows = tuple(jnp.zeros_like(rows[0]) for _ in range(NUM_FEATURES))

    def body(i, carry):
        grads, (t, *acc) = carry
        g = chunk - 1 - i
        f = [pick(row, lane, g) for row in rows]
        alpha, raw, gauss, dx, dy = gaussian_alpha(f, u, v)
        use = (alpha > 0.0) & ((base + g).astype(jnp.float32) < last)
        alpha = jnp.where(use, alpha, 0.0)
        inv = 1.0 / (1.0 - alpha)
        t_i = jnp.where(use, t * inv, t)
        w = alpha * t_i
        feat = (f[CR], f[CG], f[CBL], f[DZ])
        d_alpha = -g_t * t_final * inv
        for gc, fc, rc in zip(colour_grads, feat, acc, strict=True):
            d_alpha = d_alpha + gc * t_i * (fc - rc)
        d_raw = jnp.where(use & (raw < ALPHA_MAX), d_alpha, 0.0)
        d_sig = d_raw * alpha
        vals = (
            jnp.sum(d_sig * (f[CA] * dx + f[CB] * dy)),
            jnp.sum(d_sig * (f[CB] * dx + f[CC] * dy)),
            jnp.sum(d_sig * (-0.5 * dx * dx)),
            jnp.sum(d_sig * (-dx * dy)),
            jnp.sum(d_sig * (-0.5 * dy * dy)),
            jnp.sum(d_raw * gauss),
            jnp.sum(g_r * w), jnp.sum(g_g * w), jnp.sum(g_b * w), jnp.sum(g_d * w),
        )
        grads = tuple(jnp.where(lane == g, val, row) for val, row in zip(vals, grads, strict=True))
        acc = [jnp.where(use, alpha * fc + (1.0 - alpha) * rc, rc) for fc, rc in zip(feat, acc, strict=True)]
        return grads, (t_i, *acc)

    return jax.lax.fori_loop(0, chunk, body, (zero_rows, tuple(state)))


def _tpu_kernel(order_ref, tile_ref, k_ref, last_ref, active_ref, f_ref, in_ref, g_ref, st_ref, *, chunk, tiles_x,
                tiles_per_camera):
    c = pl.program_id(0)
    q = order_ref[c]

    @pl.when((active_ref[c] == 1) & (last_ref[q] == 1))
    def _():
        st_ref[0:1, :] = in_ref[0, 5:6, :]
        st_ref[1:5, :] = jnp.zeros((4, PIXELS), jnp.float32)

    @pl.when(active_ref[c] == 1)
    def _():
        u, v = pixel_centres(tile_ref[q], tiles_x, tiles_per_camera, (1, PIXELS))
        rows = [f_ref[0, j:j + 1, :] for j in range(NUM_FEATURES)]
        pix_in = [in_ref[0, j:j + 1, :] for j in range(7)]
        state = [st_ref[j:j + 1, :] for j in range(5)]
        grads, state = backprop_chunk(rows, pix_in, state, u, v, k_ref[q] * chunk, chunk)
        for j, row in enumerate(state):
            st_ref[j:j + 1, :] = row
        for j, row in enumerate(grads):
            g_ref[0, j:j + 1, :] = row
        g_ref[0, NUM_FEATURES:, :] = jnp.zeros((FEATURE_ROWS - NUM_FEATURES, chunk), jnp.float32)


def _gpu_kernel(first_ref, count_ref, f_ref, in_ref, g_ref, *, chunk, tiles_x, tiles_per_camera):
    t = pl.program_id(0)
    u, v = pixel_centres(t, tiles_x, tiles_per_camera, (PIXELS,))
    first, count = first_ref[t], count_ref[t]
    pix_in = [in_ref[0, j, :] for j in range(7)]
    zero = jnp.zeros((PIXELS,), jnp.float32)

    def per_chunk(i, state):
        k = count - 1 - i
        rows = [f_ref[first + k, j, :] for j in range(NUM_FEATURES)]
        grads, state = backprop_chunk(rows, pix_in, state, u, v, k * chunk, chunk)
        for j, row in enumerate(grads):
            g_ref[first + k, j, :] = row
        return state

    jax.lax.fori_loop(0, count, per_chunk, (pix_in[5], zero, zero, zero, zero))


@functools.partial(jax.jit, static_argnames=("tiles_x", "tiles_per_camera", "platform", "interpret"))
def backward_raw(fk, pix_in, chunk_tile, chunk_k, chunk_last, n_chunks, *, tiles_x, tiles_per_camera, platform,
                 interpret):
    """Kernel-layout backward: ``fk (Kc,16,C)``, ``pix_in (T,8,256)`` -> gradients ``(Kc,16,C)``."""
    kc, _, chunk = fk.shape
    num_tiles = pix_in.shape[0]
    out_shape = jax.ShapeDtypeStruct(fk.shape, jnp.float32)
    if platform == "tpu":
        c = jnp.arange(kc, dtype=jnp.int32)
        active = c < n_chunks
        # Reverse order over the used chunks; the idle tail repeats chunk 0 (same block: no write-back).
        order = jnp.where(active, n_chunks - 1 - c, 0).astype(jnp.int32)
        kernel = functools.partial(_tpu_kernel, chunk=chunk, tiles_x=tiles_x, tiles_per_camera=tiles_per_camera)
        grid_spec = pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=5,
            grid=(kc,),
            in_specs=[
                pl.BlockSpec((1, FEATURE_ROWS, chunk), lambda c, o, t, k, la, a: (o[c], 0, 0)),
                pl.BlockSpec((1, IN_ROWS, PIXELS), lambda c, o, t, k, la, a: (t[o[c]], 0, 0)),
            ],
            out_specs=pl.BlockSpec((1, FEATURE_ROWS, chunk), lambda c, o, t, k, la, a: (o[c], 0, 0)),
            scratch_shapes=[pltpu.VMEM((STATE_ROWS, PIXELS), jnp.float32)],
        )
        return pl.pallas_call(
            kernel, grid_spec=grid_spec, out_shape=out_shape, interpret=interpret,
            compiler_params=pltpu.CompilerParams(dimension_semantics=("arbitrary",)),
            cost_estimate=cost(kc, chunk, num_tiles),
        )(order, chunk_tile, chunk_k, chunk_last.astype(jnp.int32), active.astype(jnp.int32), fk, pix_in)
    if platform == "gpu":
        first, count = tile_runs(chunk_tile, chunk_k, num_tiles)
        kernel = functools.partial(_gpu_kernel, chunk=chunk, tiles_x=tiles_x, tiles_per_camera=tiles_per_camera)
        grads = pl.pallas_call(
            kernel, grid=(num_tiles,), out_shape=out_shape, interpret=interpret,
            in_specs=[pl.no_block_spec, pl.no_block_spec, pl.no_block_spec,
                      pl.BlockSpec((1, IN_ROWS, PIXELS), lambda t: (t, 0, 0))],
            out_specs=pl.no_block_spec,
            cost_estimate=cost(kc, chunk, num_tiles),
        )(first, count, fk, pix_in)
        # Unused chunks are never visited by a program: give them defined zeros.
        return jnp.where((chunk_k >= 0)[:, None, None], grads, 0.0)
    raise ValueError(f"unknown Pallas platform {platform!r}; expected 'tpu' or 'gpu'")


def backward(feats, chunk_tile, chunk_k, chunk_last, n_chunks, trans, last, g_colour, g_depth, g_trans, *,
             tiles_x, tiles_per_camera, platform, interpret):
    """Per-slot gradients ``(Kc, C, 10)``; same contract as :func:`avatar_jax.kernels.splat_xla.backward`."""
    pix_in = jnp.concatenate(
        [jnp.swapaxes(g_colour, 1, 2), g_depth[:, None], g_trans[:, None], trans[:, None], last[:, None],
         jnp.zeros_like(trans[:, None])], axis=1).astype(jnp.float32)
    grads = backward_raw(to_kernel_layout(feats), pix_in, chunk_tile, chunk_k, chunk_last, n_chunks,
                         tiles_x=tiles_x, tiles_per_camera=tiles_per_camera, platform=platform, interpret=interpret)
    return jnp.swapaxes(grads[:, :NUM_FEATURES, :], 1, 2)
