"""Tile binning: which 16x16 tiles each projected Gaussian touches, sorted by a 32-bit (tile, depth) key.

A Gaussian with mean ``m`` and radius ``r > 0`` touches tile ``t`` (pixels ``[16t, 16t+16)``) along an
axis iff ``16 t < m + r`` and ``m - r < 16 (t + 1)``, i.e. tiles ``floor((m-r)/16) .. ceil((m+r)/16)-1``
clipped to the image. Every (camera, Gaussian) instance with its rectangle of tiles is expanded into
``capacity`` static slots; slot ``e`` carries the key ``tile << depth_bits | depth_rank`` where
``depth_rank`` is the Gaussian's position in its camera's stable depth order. One ``lax.sort`` of the
uint32 keys (done by XLA, outside every kernel) orders the slots by tile, then front to back.

The sorted list is then cut into chunks of ``chunk`` slots that never straddle two tiles (each
tile's run is padded up to a whole number of chunks, and an empty tile still gets one empty chunk),
so every kernel block belongs to exactly one tile. The number of chunks is bounded statically by
``ceil(capacity / chunk) + num_tiles``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from avatar_jax.errors import InputError

TILE = 16


class TileGrid(NamedTuple):
    """Static tiling of a batch of ``cameras`` images of ``height x width`` pixels."""

    width: int
    height: int
    cameras: int

    @property
    def tiles_x(self) -> int:
        return -(-self.width // TILE)

    @property
    def tiles_y(self) -> int:
        return -(-self.height // TILE)

    @property
    def tiles_per_camera(self) -> int:
        return self.tiles_x * self.tiles_y

    @property
    def num_tiles(self) -> int:
        return self.cameras * self.tiles_per_camera


class ChunkLayout(NamedTuple):
    """The sorted intersection list cut into per-tile chunks (``Kc`` chunks of ``C`` slots)."""

    slot_gid: jax.Array  # (Kc, C) int32 instance id (camera * N + gaussian) of each slot
    slot_valid: jax.Array  # (Kc, C) bool; False for padding
    chunk_tile: jax.Array  # (Kc,) int32 tile of each chunk (global over cameras)
    chunk_k: jax.Array  # (Kc,) int32 position of the chunk within its tile's run, -1 if unused
    chunk_last: jax.Array  # (Kc,) bool: last chunk of its tile
    n_chunks: jax.Array  # () int32 chunks in use (a prefix of the Kc)
    n_intersections: jax.Array  # () int32 tile-Gaussian intersections (may exceed capacity)


def tile_rects(means2d: jax.Array, radii: jax.Array, grid: TileGrid) -> tuple[jax.Array, ...]:
    """``means2d (M,2)``, ``radii (M,)`` -> tile ranges ``x0, y0, x1, y1`` (int32, exclusive ends) and counts."""
    m = jax.lax.stop_gradient(means2d)
    lo = jnp.floor((m - radii[:, None]) / TILE)
    hi = jnp.ceil((m + radii[:, None]) / TILE)
    x0 = jnp.clip(lo[:, 0], 0, grid.tiles_x).astype(jnp.int32)
    x1 = jnp.clip(hi[:, 0], 0, grid.tiles_x).astype(jnp.int32)
    y0 = jnp.clip(lo[:, 1], 0, grid.tiles_y).astype(jnp.int32)
    y1 = jnp.clip(hi[:, 1], 0, grid.tiles_y).astype(jnp.int32)
    w, h = jnp.maximum(x1 - x0, 0), jnp.maximum(y1 - y0, 0)
    counts = jnp.where(radii > 0, w * h, 0)
    return x0, y0, x1, counts


def count_intersections(means2d: jax.Array, radii: jax.Array, grid: TileGrid) -> jax.Array:
    """Total number of (tile, Gaussian) pairs, ``()`` int32."""
    return jnp.sum(tile_rects(means2d, radii, grid)[3])


def key_bits(num_gaussians: int, grid: TileGrid) -> int:
    """Bits of the depth rank in the key; raises when (tile, rank) cannot fit in 32 bits."""
    depth_bits = max(1, math.ceil(math.log2(max(num_gaussians, 2))))
    if grid.num_tiles * (1 << depth_bits) >= 1 << 32:
        raise InputError(
            f"{grid.num_tiles} tiles x {num_gaussians} Gaussians do not fit a 32-bit (tile, depth) sort key; "
            "render fewer cameras at once or use fewer Gaussians"
        )
    return depth_bits


def bin_and_sort(means2d: jax.Array, radii: jax.Array, depths: jax.Array, grid: TileGrid, *,
                 capacity: int, chunk: int) -> ChunkLayout:
    """Build the chunked, sorted intersection list.

    Args:
      means2d: ``(B*N, 2)`` screen means of every (camera, Gaussian) instance, camera-major.
      radii: ``(B*N,)`` integer radii (0 = culled).
      depths: ``(B, N)`` camera-space depths (the sort order inside a tile).
      capacity: static number of intersection slots; intersections beyond it are reported through
        ``n_intersections`` (the caller refuses to use an overflowing layout, nothing is dropped silently).
      chunk: slots per chunk (the kernels' block of Gaussians).
    """
    cams, n = depths.shape
    depth_bits = key_bits(n, grid)
    x0, y0, x1, counts = tile_rects(means2d, radii, grid)
    w = jnp.maximum(x1 - x0, 1)
    ends = jnp.cumsum(counts)
    total = ends[-1]
    starts = ends - counts
    # Depth rank of each Gaussian within its camera (stable, so equal depths keep index order).
    order = jnp.argsort(jax.lax.stop_gradient(depths), axis=-1, stable=True).astype(jnp.int32)
    ranks = jnp.zeros_like(order).at[jnp.arange(cams)[:, None], order].set(jnp.arange(n, dtype=jnp.int32)[None])
    ranks = ranks.reshape(-1)

    # Expand instances into slots: slot e belongs to the instance whose [start, end) holds e.
    e = jnp.arange(capacity, dtype=jnp.int32)
    inst = jnp.clip(jnp.searchsorted(ends, e, side="right"), 0, cams * n - 1).astype(jnp.int32)
    local = e - starts[inst]
    tx = x0[inst] + local % w[inst]
    ty = y0[inst] + local // w[inst]
    cam = inst // n
    tile = cam * grid.tiles_per_camera + ty * grid.tiles_x + tx
    key = (tile.astype(jnp.uint32) << depth_bits) | ranks[inst].astype(jnp.uint32)
    key = jnp.where(e < total, key, jnp.uint32(0xFFFFFFFF))
    key = jax.lax.sort(key)

    s_tile = (key >> depth_bits).astype(jnp.int32)
    s_rank = (key & jnp.uint32((1 << depth_bits) - 1)).astype(jnp.int32)
    s_cam = jnp.clip(s_tile // grid.tiles_per_camera, 0, cams - 1)
    sorted_gid = s_cam * n + order[s_cam, jnp.clip(s_rank, 0, n - 1)]

    tiles = jnp.arange(grid.num_tiles, dtype=jnp.int32)
    tile_start = jnp.searchsorted(s_tile, tiles, side="left").astype(jnp.int32)
    tile_count = jnp.searchsorted(s_tile, tiles, side="right").astype(jnp.int32) - tile_start

    # Chunks: each tile gets max(1, ceil(count / chunk)) of them, laid out tile after tile.
    num_chunks = -(-capacity // chunk) + grid.num_tiles
    nch = jnp.maximum(1, -(-tile_count // chunk))
    ch_end = jnp.cumsum(nch)
    ch_start = ch_end - nch
    c = jnp.arange(num_chunks, dtype=jnp.int32)
    c_tile = jnp.clip(jnp.searchsorted(ch_end, c, side="right"), 0, grid.num_tiles - 1).astype(jnp.int32)
    used = c < ch_end[-1]
    k = jnp.where(used, c - ch_start[c_tile], -1)
    last = used & (k == nch[c_tile] - 1)
    within = jnp.maximum(k, 0)[:, None] * chunk + jnp.arange(chunk, dtype=jnp.int32)[None]
    slot_valid = used[:, None] & (within < tile_count[c_tile][:, None])
    pos = jnp.clip(tile_start[c_tile][:, None] + within, 0, capacity - 1)
    slot_gid = jnp.where(slot_valid, sorted_gid[pos], 0)
    return ChunkLayout(slot_gid, slot_valid, c_tile, k, last, ch_end[-1], total)
