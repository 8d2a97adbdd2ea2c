"""Tile compositing with ``jax.custom_vjp``: one entry point over the XLA path and the Pallas kernels.

``rasterize`` takes the chunked, depth-sorted Gaussians of every tile and returns, per tile and
pixel, the composited colour (without background), expected depth and final transmittance.
Gradients flow back to the per-instance feature rows (means2d, conics, opacities, colours, depths),
summed over the slots that read each row.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from avatar_jax.kernels import splat_xla


class TileSpec(NamedTuple):
    """Static description of the tiling and how to run it."""

    tiles_x: int
    tiles_per_camera: int
    num_tiles: int
    backend: str  # "xla" | "pallas"
    platform: str  # pallas flavour: "tpu" (Mosaic) | "gpu" (Triton)
    interpret: bool  # run the Pallas kernels in interpret mode (CPU tests)
    batch: int  # chunks per scan step on the XLA path
    tile_size: int = 16  # pixels per tile side (the Pallas kernels need 16; the XLA path may use 8)


def _forward(spec, rows, slot_index, chunk_tile, chunk_k, chunk_last, n_chunks):
    if spec.backend == "xla":
        colour, depth, trans, t0 = splat_xla.forward_rows(
            rows, slot_index, chunk_tile, chunk_k <= 0, n_chunks, tiles_x=spec.tiles_x,
            tiles_per_camera=spec.tiles_per_camera, num_tiles=spec.num_tiles, batch=spec.batch,
            tile_size=spec.tile_size)
        return (colour, depth, trans), (t0,)
    from avatar_jax.kernels import splat_forward

    assert spec.tile_size == 16, "the Pallas kernels composite 16x16 tiles"
    colour, depth, trans, last = splat_forward.forward(
        rows[slot_index], chunk_tile, chunk_k, n_chunks, tiles_x=spec.tiles_x, tiles_per_camera=spec.tiles_per_camera,
        num_tiles=spec.num_tiles, platform=spec.platform, interpret=spec.interpret)
    return (colour, depth, trans), (last,)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def rasterize(spec: TileSpec, rows, slot_index, chunk_tile, chunk_k, chunk_last, n_chunks):
    """``rows (M+1,10)``, ``slot_index (Kc,C)`` -> ``colour (T,P,3)``, ``depth (T,P)``, ``trans (T,P)``.

    Slot ``(k, c)`` holds the Gaussian ``rows[slot_index[k, c]]``; the last row of ``rows`` must be
    zeros (padding slots point at it). ``chunk_tile``, ``chunk_k`` (-1 = unused), ``chunk_last``
    ``(Kc,)`` and ``n_chunks ()`` come from :func:`avatar_jax.render.binning.bin_and_sort`. The XLA
    path gathers one loop step's slots at a time, and its backward adds their gradients straight into
    rows, so no ``(Kc, C, 10)`` array is stored either way.
    """
    return _forward(spec, rows, slot_index, chunk_tile, chunk_k, chunk_last, n_chunks)[0]


def _fwd(spec, rows, slot_index, chunk_tile, chunk_k, chunk_last, n_chunks):
    out, res = _forward(spec, rows, slot_index, chunk_tile, chunk_k, chunk_last, n_chunks)
    return out, (rows, slot_index, chunk_tile, chunk_k, chunk_last, n_chunks, out, res)


def _bwd(spec, saved, cts):
    rows, slot_index, chunk_tile, chunk_k, chunk_last, n_chunks, out, res = saved
    g_colour, g_depth, g_trans = cts
    colour, depth, trans = out
    if spec.backend == "xla":
        (t0,) = res
        d_rows = splat_xla.backward_rows(rows, slot_index, chunk_tile, n_chunks, t0, colour, depth, trans,
                                         g_colour, g_depth, g_trans, tiles_x=spec.tiles_x,
                                         tiles_per_camera=spec.tiles_per_camera, batch=spec.batch,
                                         tile_size=spec.tile_size)
    else:
        from avatar_jax.kernels import splat_backward

        (last,) = res
        d_feats = splat_backward.backward(
            rows[slot_index], chunk_tile, chunk_k, chunk_last, n_chunks, trans, last, g_colour, g_depth, g_trans,
            tiles_x=spec.tiles_x, tiles_per_camera=spec.tiles_per_camera, platform=spec.platform,
            interpret=spec.interpret)
        d_rows = jnp.zeros(rows.shape, d_feats.dtype).at[slot_index].add(d_feats)
    return d_rows.astype(rows.dtype), None, None, None, None, None


rasterize.defvjp(_fwd, _bwd)
