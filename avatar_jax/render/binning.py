"""Tile binning: which 16x16 tiles each projected Gaussian touches, sorted by (tile, depth).

A Gaussian with mean ``m`` and radius ``r > 0`` touches tile ``t`` (pixels ``[16t, 16t+16)``) along an
axis iff ``16 t < m + r`` and ``m - r < 16 (t + 1)``, i.e. tiles ``floor((m-r)/16) .. ceil((m+r)/16)-1``
clipped to the image. Every (camera, Gaussian) instance with its rectangle of tiles is expanded into
``capacity`` static slots; slot ``e`` carries its global tile and ``depth_rank``, the Gaussian's
position in its camera's stable depth order (equal depths in index order, as the reference). One
``lax.sort`` (done by XLA, outside every kernel) orders the slots by tile, then front to back: of
one packed uint32 key ``tile << depth_bits | depth_rank`` when that fits 32 bits (the fastest sort
on every backend), else of the two int32 keys ``(tile, depth_rank)`` with ``num_keys=2``. So there
is no cap from key bits: the limits are int32 tile and instance ids (:func:`check_sizes`), far
beyond 8 cameras x 4M Gaussians at 1920x1080.

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
from avatar_jax.render import footprint

TILE = 16  # DESIGN.md's tile: the 3-sigma box is tested against 16x16 tiles
INT32_LIMIT = 2**31 - 1
# Largest capacity: the slot cumsum stays exact in int32 (capacity + one instance's tiles < 2^31).
MAX_SLOTS = 2**30


class TileGrid(NamedTuple):
    """Static tiling of a batch of ``cameras`` images of ``height x width`` pixels into ``tile``-pixel bins.

    ``tile`` is 16 (DESIGN.md's tile) for the Pallas kernels; the XLA path bins at 8 (a divisor of 16):
    a bin inherits its 16-pixel tile's box test, and its own smaller rectangle only sharpens the
    exact alpha test, so the image is the same while far fewer pixels are evaluated per Gaussian.
    """

    width: int
    height: int
    cameras: int
    tile: int = TILE

    @property
    def tiles_x(self) -> int:
        return -(-self.width // self.tile)

    @property
    def tiles_y(self) -> int:
        return -(-self.height // self.tile)

    @property
    def pixels(self) -> int:
        return self.tile * self.tile

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
    camera_intersections: jax.Array  # (B,) int32 tile-Gaussian intersections per camera (may exceed capacity)
    camera_overflow: jax.Array  # (B,) bool: some of this camera's intersections did not fit the capacity


def tile_rects(means2d: jax.Array, radii: jax.Array, conics: jax.Array, opacities: jax.Array,
               grid: TileGrid) -> tuple[jax.Array, ...]:
    """Candidate tiles of each instance: the 3-sigma box narrowed per axis to where alpha can reach 1/255.

    ``means2d (M,2)``, ``radii (M,)``, ``conics (M,3)``, ``opacities (M,)`` -> tile ranges ``x0, y0, x1``
    (int32; ``x1`` exclusive) and ``counts (M,)`` (see :mod:`avatar_jax.render.footprint`).
    """
    m = jax.lax.stop_gradient(means2d)
    q_max = footprint.cutoff(jax.lax.stop_gradient(opacities))
    ext = footprint.extents(jax.lax.stop_gradient(conics), q_max)
    # DESIGN.md's box (continuous overlap with 16-pixel tiles), in bins ...
    per = TILE // grid.tile
    lo = jnp.floor((m - radii[:, None]) / TILE) * per
    hi = jnp.ceil((m + radii[:, None]) / TILE) * per
    # ... intersected with the bins whose pixel centres [bt + 0.5, bt + b - 0.5] meet the ellipse's extent.
    b = grid.tile
    lo = jnp.maximum(lo, jnp.ceil((m - ext - (b - 0.5)) / b))
    hi = jnp.minimum(hi, jnp.floor((m + ext - 0.5) / b) + 1)
    x0 = jnp.clip(lo[:, 0], 0, grid.tiles_x).astype(jnp.int32)
    x1 = jnp.clip(hi[:, 0], 0, grid.tiles_x).astype(jnp.int32)
    y0 = jnp.clip(lo[:, 1], 0, grid.tiles_y).astype(jnp.int32)
    y1 = jnp.clip(hi[:, 1], 0, grid.tiles_y).astype(jnp.int32)
    w, h = jnp.maximum(x1 - x0, 0), jnp.maximum(y1 - y0, 0)
    counts = jnp.where((radii > 0) & (q_max >= 0), w * h, 0)
    return x0, y0, x1, counts


def camera_counts(means2d: jax.Array, radii: jax.Array, conics: jax.Array, opacities: jax.Array,
                  grid: TileGrid) -> jax.Array:
    """Candidate (tile, Gaussian) pairs per camera, ``(B,)`` int32 (instances are camera-major)."""
    return jnp.sum(tile_rects(means2d, radii, conics, opacities, grid)[3].reshape(grid.cameras, -1), axis=1)


def check_sizes(num_gaussians: int, grid: TileGrid) -> None:
    """Raise :class:`InputError` when instance or tile ids would not fit int32 (the only size limits)."""
    if grid.tile < 1 or TILE % grid.tile:
        raise InputError(f"render: bin size must divide {TILE}, got {grid.tile}")
    if grid.cameras * num_gaussians > INT32_LIMIT:
        raise InputError(f"render: {grid.cameras} cameras x {num_gaussians} Gaussians exceed 2^31 instances; "
                         "render fewer cameras per call")
    if grid.num_tiles + 1 > INT32_LIMIT:
        raise InputError(f"render: {grid.num_tiles} tiles exceed int32 tile ids; render fewer or smaller images")


def packed_depth_bits(num_gaussians: int, num_tiles: int) -> int | None:
    """Bits for the depth rank in a packed uint32 key, or None when ``(tile, rank)`` needs two keys.

    Tile ids go up to ``num_tiles`` inclusive (the id of empty slots).
    """
    depth_bits = max(1, math.ceil(math.log2(max(num_gaussians, 2))))
    return depth_bits if (num_tiles + 1) << depth_bits <= 1 << 32 else None


def sort_slots(tile: jax.Array, rank: jax.Array, num_gaussians: int, num_tiles: int) -> tuple[jax.Array, jax.Array]:
    """Sort slots by ``(tile, rank)``: ``tile (E,)`` int32 in ``[0, num_tiles]``, ``rank (E,)`` int32 in ``[0, N)``.

    Returns the sorted tiles and ranks (``(tile, rank)`` pairs are unique, so stability is moot).
    """
    depth_bits = packed_depth_bits(num_gaussians, num_tiles)
    if depth_bits is None:
        return jax.lax.sort((tile, rank), num_keys=2)
    key = jax.lax.sort((tile.astype(jnp.uint32) << depth_bits) | rank.astype(jnp.uint32))
    return (key >> depth_bits).astype(jnp.int32), (key & jnp.uint32((1 << depth_bits) - 1)).astype(jnp.int32)


def bin_and_sort(means2d: jax.Array, radii: jax.Array, conics: jax.Array, opacities: jax.Array,
                 depths: jax.Array, grid: TileGrid, *, capacity: int, chunk: int,
                 chunk_multiple: int = 1) -> ChunkLayout:
    """Build the chunked, sorted intersection list.

    Args:
      means2d: ``(B*N, 2)`` screen means of every (camera, Gaussian) instance, camera-major.
      radii: ``(B*N,)`` integer radii (0 = culled).
      conics: ``(B*N, 3)`` inverse 2D covariances; opacities ``(B*N,)`` (to bound the footprints).
      depths: ``(B, N)`` camera-space depths (the sort order inside a tile).
      capacity: static number of intersection slots; intersections beyond it are dropped and
        reported per camera in ``camera_overflow`` (the caller poisons those images: never silent).
      chunk: slots per chunk (the kernels' block of Gaussians).
      chunk_multiple: the static number of chunks ``Kc`` is rounded up to a multiple of this (the XLA
        path's chunks per loop step: its batches are then a reshape, not a padded copy).
    """
    cams, n = depths.shape
    x0, y0, x1, counts = tile_rects(means2d, radii, conics, opacities, grid)
    w = jnp.maximum(x1 - x0, 1)
    ends = jnp.cumsum(counts)
    starts = ends - counts
    # Camera b is complete iff its instances' slots all end within capacity. The cumsum is exact up
    # to the first instance past capacity (capacity < MAX_SLOTS), whatever happens after it.
    past = ends > capacity
    first_past = jnp.argmax(past) // n
    camera_overflow = jnp.any(past) & (jnp.arange(cams) >= first_past)
    total = jnp.minimum(ends[-1], capacity)

    # Expand instances into slots: slot e belongs to the instance whose [start, end) holds e, i.e. the last
    # instance with slots that starts at or before e. Marking each start and a running max finds it
    # (3x faster on XLA:CPU than a capacity-long searchsorted); slots past ``total`` are unused.
    e = jnp.arange(capacity, dtype=jnp.int32)
    ids = jnp.arange(cams * n, dtype=jnp.int32)
    mark = jnp.zeros((capacity,), jnp.int32).at[jnp.where(counts > 0, starts, capacity)].max(ids, mode="drop")
    inst = jax.lax.cummax(mark)
    # Per-instance values as two row tables gathered once per slot (XLA:CPU gathers rows far faster than
    # ten separate scalar gathers), and the slot's place in its rectangle by float division (exact: a
    # rectangle has far fewer than 2^22 bins; integer division does not vectorise).
    # Depth rank of each Gaussian within its camera (stable, so equal depths keep index order).
    order = jnp.argsort(jax.lax.stop_gradient(depths), axis=-1, stable=True).astype(jnp.int32)
    ranks = jnp.zeros_like(order).at[jnp.arange(cams)[:, None], order].set(jnp.arange(n, dtype=jnp.int32)[None])
    itab = jnp.stack([starts, (ids // n) * grid.tiles_per_camera, ranks.reshape(-1)], axis=-1)[inst]
    ftab = jnp.concatenate([jnp.stack([x0, y0, w], axis=-1).astype(means2d.dtype), jax.lax.stop_gradient(means2d),
                            jax.lax.stop_gradient(conics),
                            footprint.cutoff(jax.lax.stop_gradient(opacities))[:, None]], axis=-1)[inst]
    local = (e - itab[:, 0]).astype(means2d.dtype)
    dy = jnp.floor((local + 0.5) / ftab[:, 2])
    tx, ty = ftab[:, 0] + (local - dy * ftab[:, 2]), ftab[:, 1] + dy
    # Exact ellipse-vs-tile test: candidates no pixel of which can reach alpha 1/255 become empty slots.
    q_min = footprint.min_q_over_tile(ftab[:, 3:5], ftab[:, 5:8], tx, ty, grid.tile)
    hit = (e < total) & (q_min <= ftab[:, 8])
    tile = jnp.where(hit, itab[:, 1] + (ty * grid.tiles_x + tx).astype(jnp.int32), grid.num_tiles)
    s_tile, s_rank = sort_slots(tile, itab[:, 2], n, grid.num_tiles)
    s_cam = jnp.clip(s_tile // grid.tiles_per_camera, 0, cams - 1)
    sorted_gid = s_cam * n + order[s_cam, s_rank]

    tiles = jnp.arange(grid.num_tiles, dtype=jnp.int32)
    tile_start = jnp.searchsorted(s_tile, tiles, side="left").astype(jnp.int32)
    tile_count = jnp.searchsorted(s_tile, tiles, side="right").astype(jnp.int32) - tile_start

    # Chunks: each tile gets max(1, ceil(count / chunk)) of them, laid out tile after tile.
    num_chunks = -(-(-(-capacity // chunk) + grid.num_tiles) // chunk_multiple) * chunk_multiple
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
    camera_intersections = jnp.sum(counts.reshape(cams, n), axis=1)
    return ChunkLayout(slot_gid, slot_valid, c_tile, k, last, ch_end[-1], camera_intersections, camera_overflow)
