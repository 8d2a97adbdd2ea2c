"""Tile compositing with ``jax.custom_vjp``: one entry point over the XLA path and the Pallas kernels.

``rasterize`` takes the chunked, depth-sorted Gaussians of every tile and returns, per tile and
pixel, the composited colour (without background), expected depth and final transmittance.
Gradients flow back to the per-slot features (means2d, conics, opacities, colours, depths); the
caller scatters them onto Gaussians (the gather in its forward does that under autodiff).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
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


def _forward(spec, feats, chunk_tile, chunk_k, chunk_last, n_chunks):
    if spec.backend == "xla":
        colour, depth, trans, t0 = splat_xla.forward(
            feats, chunk_tile, chunk_k <= 0, n_chunks, tiles_x=spec.tiles_x, tiles_per_camera=spec.tiles_per_camera,
            num_tiles=spec.num_tiles, batch=spec.batch, tile_size=spec.tile_size)
        return (colour, depth, trans), (t0,)
    from avatar_jax.kernels import splat_forward

    assert spec.tile_size == 16, "the Pallas kernels composite 16x16 tiles"
    colour, depth, trans, last = splat_forward.forward(
        feats, chunk_tile, chunk_k, n_chunks, tiles_x=spec.tiles_x, tiles_per_camera=spec.tiles_per_camera,
        num_tiles=spec.num_tiles, platform=spec.platform, interpret=spec.interpret)
    return (colour, depth, trans), (last,)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def rasterize(spec: TileSpec, feats, chunk_tile, chunk_k, chunk_last, n_chunks):
    """``feats (Kc,C,10)`` -> ``colour (T,256,3)``, ``depth (T,256)``, ``trans (T,256)``.

    ``chunk_tile``, ``chunk_k`` (-1 = unused), ``chunk_last`` ``(Kc,)`` and ``n_chunks ()`` come from
    :func:`avatar_jax.render.binning.bin_and_sort`.
    """
    return _forward(spec, feats, chunk_tile, chunk_k, chunk_last, n_chunks)[0]


def _fwd(spec, feats, chunk_tile, chunk_k, chunk_last, n_chunks):
    out, res = _forward(spec, feats, chunk_tile, chunk_k, chunk_last, n_chunks)
    return out, (feats, chunk_tile, chunk_k, chunk_last, n_chunks, out, res)


def _bwd(spec, saved, cts):
    feats, chunk_tile, chunk_k, chunk_last, n_chunks, out, res = saved
    g_colour, g_depth, g_trans = cts
    colour, depth, trans = out
    if spec.backend == "xla":
        (t0,) = res
        d_feats = splat_xla.backward(feats, chunk_tile, n_chunks, t0, colour, depth, trans,
                                     g_colour, g_depth, g_trans, tiles_x=spec.tiles_x,
                                     tiles_per_camera=spec.tiles_per_camera, batch=spec.batch,
                                     tile_size=spec.tile_size)
    else:
        from avatar_jax.kernels import splat_backward

        (last,) = res
        d_feats = splat_backward.backward(
            feats, chunk_tile, chunk_k, chunk_last, n_chunks, trans, last, g_colour, g_depth, g_trans,
            tiles_x=spec.tiles_x, tiles_per_camera=spec.tiles_per_camera, platform=spec.platform,
            interpret=spec.interpret)
    return d_feats.astype(feats.dtype), None, None, None, None


rasterize.defvjp(_fwd, _bwd)
