"""``render``: Gaussians + camera(s) -> rgb, alpha, depth. Projection, binning and compositing glued together.

Capacity (the static number of tile-Gaussian intersection slots) is the one data-dependent size:

* eager call (concrete inputs): the exact count is computed first; ``capacity=None`` or one that is
  too small becomes the next power of two above it (recompiles are rare, nothing is dropped).
* traced call (under ``jit``/``grad``) with ``capacity=None``: :func:`auto_capacity`, at most
  ``AUTO_TILES_PER_GAUSSIAN`` tiles per Gaussian and camera (never more than every tile), which keeps
  the temporaries below the dense splatter's; for training pass ``capacity`` (e.g. from
  :func:`intersection_count` on a representative frame, with slack).
* traced call that overflows: there is no host round trip under ``jit`` (no callbacks, so the render
  exports and shards), so the overflow is an *output*: ``RenderOutput.overflow`` is True for every
  camera whose intersections did not all fit, and that camera's ``rgb``/``alpha``/``depth`` are NaN
  (never a plausible but wrong image). ``n_intersections`` holds the exact per-camera counts.

Intersections are (bin, Gaussian) candidates: bins are 8 px on the XLA path and 16 px for the Pallas
kernels (:data:`TILE_SIZE`), inside the opacity-aware box of :mod:`avatar_jax.render.footprint`;
:func:`intersection_count` with the same ``backend`` gives what ``capacity`` must hold.
  A training step should treat ``overflow.any()`` like a non-finite loss: skip the update (keep the
  old parameters and optimizer state via ``jnp.where``/``lax.cond``), count the skipped steps, and
  raise ``capacity`` above ``n_intersections.sum()`` for the next compile.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.errors import InputError
from avatar_jax.geometry import Camera
from avatar_jax.kernels import splat, splat_xla
from avatar_jax.kernels.splat_common import CA, CC, MX, MY, NUM_FEATURES, OP
from avatar_jax.render import binning, checks, sh
from avatar_jax.render.projection import project

# Gaussians per chunk (the kernels' block). TPU: a full 128-lane row; GPU (Triton): 64 keeps the
# per-program register footprint small; XLA on CPU: 16 measured fastest (less padding, cache-sized).
CHUNK = {"tpu": 128, "gpu": 64, "xla": 16, "interpret": 16}
XLA_BATCH = 256  # chunks per scan step on the XLA path (measured best on a 2-core CPU)
XLA_VISIBLE_BATCH = 256  # chunks per step of the forward-only XLA path
# Tile side per backend. The XLA path bins at 8 px (inside DESIGN.md's 16 px tiles, same image): small
# Gaussians then cost 64-pixel blocks instead of 256-pixel ones. The Pallas kernels keep 16.
TILE_SIZE = {"xla": 8, "pallas": 16}


# Traced calls without ``capacity`` reserve this many tile slots per Gaussian and camera: a footprint of
# 16 tiles (64x64 px); the person scene needs 3-5. At ~0.5 KB per slot that is ~8 KB per Gaussian,
# below the dense splatter's per-Gaussian share of its pixel blocks (tests/render/test_memory.py).
AUTO_TILES_PER_GAUSSIAN = 16


class RenderOutput(NamedTuple):
    rgb: jax.Array  # (H,W,3) or (B,H,W,3)
    alpha: jax.Array  # (H,W) or (B,H,W)
    depth: jax.Array  # (H,W) or (B,H,W): expected camera-space depth, sum z_i alpha_i T_i
    n_intersections: jax.Array | None = None  # () or (B,) int32: (bin, Gaussian) candidates per camera
    overflow: jax.Array | None = None  # () or (B,) bool: True where the capacity was too small (image NaN)


def _resolve_backend(backend: str, pallas_platform: str | None, interpret: bool | None):
    platform = jax.default_backend()
    if backend not in ("auto", "pallas", "xla"):
        raise InputError(f"render: backend must be 'auto', 'pallas' or 'xla', got {backend!r}")
    if backend == "auto":
        backend = "pallas" if platform in ("gpu", "tpu") else "xla"
    if backend == "xla":
        return "xla", "xla", False
    flavour = pallas_platform or (platform if platform in ("gpu", "tpu") else "tpu")
    if flavour not in ("gpu", "tpu"):
        raise InputError(f"render: pallas_platform must be 'gpu' or 'tpu', got {flavour!r}")
    if interpret is None:
        interpret = platform not in ("gpu", "tpu")
    return "pallas", flavour, interpret


def camera_arrays(camera: Camera):
    if not isinstance(camera, Camera):
        raise InputError(f"render: camera must be an avatar_jax.geometry.Camera, got {type(camera).__name__}")
    single = camera.batch_shape == ()
    viewmats = camera.viewmat[None] if single else camera.viewmat
    Ks = camera.K[None] if single else camera.K
    return single, viewmats, Ks


def project_instances(means, quats, scales, opacities, colors, viewmats, Ks, width, height, antialiased=False):
    """Per camera projection -> instance features ``(B*N, F)`` (splat_common), radii ``(B*N,)``, depths ``(B,N)``.

    Gaussians are shared by all cameras (``means (N,3)``...) or given per camera (``(B,N,3)``...).
    """
    per_camera = means.ndim == 3
    g_axis = 0 if per_camera else None
    proj = jax.vmap(functools.partial(project, width=width, height=height, antialiased=antialiased),
                    in_axes=(g_axis, g_axis, g_axis, g_axis, 0, 0))(means, quats, scales, opacities, viewmats, Ks)
    cams, n = proj.depths.shape
    if colors.ndim == means.ndim + 1:  # SH coefficients
        rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
        cam_pos = -jnp.einsum("bji,bj->bi", rot, trans, precision=jax.lax.Precision.HIGHEST)  # full f32 on GPUs too
        rgb = jax.vmap(sh.eval_colors, in_axes=(g_axis, g_axis, 0))(colors, means, cam_pos)
    else:
        rgb = jnp.broadcast_to(colors, (cams, n, 3))
    feats = jnp.concatenate(
        [proj.means2d, proj.conics, proj.opacities[..., None], rgb, proj.depths[..., None]], axis=-1
    ).reshape(cams * n, NUM_FEATURES)
    return feats, proj.radii.reshape(-1), proj.depths


@functools.partial(jax.jit, static_argnames=("width", "height", "tile"))
def _count(means, quats, scales, opacities, viewmats, Ks, width, height, tile):
    """Per-camera intersection counts ``(B,)`` int32."""
    g_axis = 0 if means.ndim == 3 else None
    proj = jax.vmap(functools.partial(project, width=width, height=height),
                    in_axes=(g_axis, g_axis, g_axis, g_axis, 0, 0))(means, quats, scales, opacities, viewmats, Ks)
    grid = binning.TileGrid(width, height, viewmats.shape[0], tile)
    return binning.camera_counts(proj.means2d.reshape(-1, 2), proj.radii.reshape(-1), proj.conics.reshape(-1, 3),
                                 proj.opacities.reshape(-1), grid)


def intersection_count(means, quats, scales, camera: Camera, opacities=None, *, backend: str = "auto") -> int:
    """Number of (tile, Gaussian) intersections for these Gaussians and camera(s), summed over cameras (eager).

    What ``render(..., backend=backend)`` needs as ``capacity``. Gaussians are ``(N,...)`` shared by the
    cameras or ``(B,N,...)`` per camera, as :func:`render` takes them. Without ``opacities`` every
    Gaussian counts as opaque (an upper bound: footprints shrink with opacity).
    """
    backend = _resolve_backend(backend, None, None)[0]
    _, viewmats, Ks = camera_arrays(camera)
    means = jnp.asarray(means)
    if opacities is None:
        opacities = jnp.ones(means.shape[:-1], means.dtype)
    counts = _count(means, jnp.asarray(quats), jnp.asarray(scales), jnp.asarray(opacities), viewmats, Ks,
                    camera.width, camera.height, TILE_SIZE[backend])
    return int(np.sum(np.asarray(counts, np.int64)))


def auto_capacity(num_gaussians: int, grid: binning.TileGrid) -> int:
    """Slots a traced call without ``capacity`` reserves: ``AUTO_TILES_PER_GAUSSIAN`` 16-px tiles' worth of bins
    per Gaussian and camera, never more than every bin."""
    per_gaussian = AUTO_TILES_PER_GAUSSIAN * (binning.TILE // grid.tile) ** 2
    return max(1, grid.cameras * num_gaussians * min(grid.tiles_per_camera, per_gaussian))


def _pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def render(means, quats, scales, opacities, colors, camera: Camera, *, background=(0.0, 0.0, 0.0),
           backend: str = "auto", capacity: int | None = None, chunk: int | None = None,
           pallas_platform: str | None = None, interpret: bool | None = None,
           check_finite: bool = True, antialiased: bool = False, normalize_depth: bool = False,
           capacity_levels: int = 1, forward_only: bool = False) -> RenderOutput:
    """Render 3D Gaussians with the 3DGS/gsplat rules of DESIGN.md.

    Args:
      means: ``(N,3)`` world positions shared by every camera, or ``(B,N,3)``: one set per camera of a
        batch of ``B`` (e.g. the frames of a talking sequence, one camera each).
      quats: ``(N,4)`` / ``(B,N,4)`` rotations (w,x,y,z), normalised here.
      scales: ``(N,3)`` / ``(B,N,3)`` linear standard deviations.
      opacities: ``(N,)`` / ``(B,N)`` in [0,1].
      colors: ``(N,3)`` RGB, or ``(N,K,3)`` SH coefficients, ``K = (d+1)^2``, ``d <= 3`` (``(B,...)`` likewise).
      camera: one :class:`Camera` (outputs ``(H,W,...)``) or a batch (outputs ``(B,H,W,...)``).
      background: ``(3,)`` colour behind the Gaussians (differentiable).
      backend: ``"auto"`` (pallas on GPU/TPU, xla on CPU), ``"pallas"`` or ``"xla"``.
      capacity: static number of tile-Gaussian intersection slots, see the module docstring.
      chunk: Gaussians per kernel block (default per platform, :data:`CHUNK`); tiles with more
        Gaussians are processed in several blocks.
      pallas_platform: kernel flavour, ``"tpu"`` (Mosaic) or ``"gpu"`` (Triton); default: the device's.
      interpret: run Pallas in interpret mode (default: True when no GPU/TPU is present).
      check_finite: eager calls only: raise :class:`InputError` on NaN/inf inputs. Under tracing it
        does nothing (no host callbacks inside ``jit``); check the loss there instead.
      antialiased: mip-splatting opacity compensation (gsplat's ``antialiased`` mode).
      normalize_depth: return expected depth divided by alpha (0 where alpha is 0) instead of
        the unnormalised ``sum z_i alpha_i T_i``.
      capacity_levels: traced calls only: compile this many slot budgets, ``capacity`` and smaller ones
        (:func:`capacity_ladder`), and run the smallest that holds the call's intersections
        (``lax.switch``), so binning, sorting and compositing cost follows the scene instead of the
        worst case ``capacity`` is sized for. Same images; the largest level overflows as before.
      forward_only: for renders nobody differentiates (inference): the XLA path then skips the chunks
        behind tiles that are already opaque (:func:`avatar_jax.kernels.splat_xla.forward_visible`),
        same images; differentiating such a render fails. No effect on the Pallas kernels.

    Returns:
      :class:`RenderOutput` with ``rgb``, ``alpha = 1 - T_final``, expected ``depth``, and per camera
      ``n_intersections`` and ``overflow`` (see the module docstring).
    """
    means, quats, scales, opacities, colors = (jnp.asarray(a) for a in (means, quats, scales, opacities, colors))
    single, viewmats, Ks = camera_arrays(camera)
    checks.check_shapes(means, quats, scales, opacities, colors, cameras=None if single else viewmats.shape[0])
    dtype = jnp.result_type(means.dtype, jnp.float32)
    background = jnp.broadcast_to(jnp.asarray(background, dtype), (3,))
    if check_finite:
        checks.check_finite(dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                                 viewmat=viewmats, K=Ks, background=background))
    if colors.ndim == means.ndim + 1:
        sh.degree_of(colors.shape[-2])
    backend, flavour, interp = _resolve_backend(backend, pallas_platform, interpret)
    chunk = int(chunk or CHUNK["interpret" if interp else flavour])
    if chunk < 1 or chunk & (chunk - 1):
        raise InputError(f"render: chunk must be a positive power of two, got {chunk}")

    cams, n = viewmats.shape[0], means.shape[-2]
    grid = binning.TileGrid(camera.width, camera.height, cams, TILE_SIZE[backend])
    binning.check_sizes(n, grid)
    if checks.is_concrete(means, quats, scales, opacities, viewmats, Ks):
        counts = _count(means, quats, scales, opacities, viewmats, Ks, camera.width, camera.height, grid.tile)
        needed = int(np.sum(np.asarray(counts, np.int64)))
        if capacity is None or capacity < needed:
            capacity = _pow2(max(needed, 1))  # automatic retry outside jit: never truncate
    elif capacity is None:
        capacity = auto_capacity(n, grid)
    capacity = int(capacity)
    if capacity < 1 or capacity >= binning.MAX_SLOTS:
        raise InputError(f"render: capacity must be in [1, {binning.MAX_SLOTS}), got {capacity}")

    if capacity_levels < 1:
        raise InputError(f"render: capacity_levels must be >= 1, got {capacity_levels}")
    levels = capacity_ladder(capacity, capacity_levels, chunk) if not checks.is_concrete(
        means, quats, scales, opacities, viewmats, Ks) else (capacity,)
    out = _render_static(means, quats, scales, opacities.astype(dtype), colors.astype(dtype), viewmats, Ks,
                         background, grid=grid, capacity=levels, chunk=chunk, backend=backend,
                         flavour=flavour, interpret=interp, antialiased=antialiased, normalize_depth=normalize_depth,
                         forward_only=bool(forward_only))
    if single:
        out = RenderOutput(*(x[0] for x in out))
    return out


# Capacity levels shrink by this factor: a scene pays at most ~1.26x the slots it needs.
LEVEL_RATIO = 2 ** (1 / 3)
# No level below this many slots: under it the per-call overhead, not the slots, dominates.
MIN_LEVEL_SLOTS = 32 * 1024


def capacity_ladder(capacity: int, levels: int, chunk: int = 1) -> tuple[int, ...]:
    """Ascending slot budgets ending at ``capacity``: up to ``levels`` of them, each ~``LEVEL_RATIO`` below the
    next, rounded up to a multiple of ``chunk``, none under ``MIN_LEVEL_SLOTS`` (``capacity`` itself is kept)."""
    caps = {int(capacity)}
    for k in range(1, levels):
        c = -(-int(math.ceil(capacity / LEVEL_RATIO**k)) // chunk) * chunk
        if c >= MIN_LEVEL_SLOTS:
            caps.add(c)
    return tuple(sorted(caps))


@functools.partial(jax.jit, static_argnames=("grid", "capacity", "chunk", "backend", "flavour", "interpret",
                                             "antialiased", "normalize_depth", "forward_only"))
def _render_static(means, quats, scales, opacities, colors, viewmats, Ks, background, *, grid, capacity, chunk,
                   backend, flavour, interpret, antialiased, normalize_depth, forward_only):
    """``capacity``: ascending tuple of slot budgets (:func:`capacity_ladder`); the smallest that fits runs."""
    feats, radii, depths = project_instances(means, quats, scales, opacities, colors, viewmats, Ks,
                                             grid.width, grid.height, antialiased)

    def composite(cap, feats):
        layout = binning.bin_and_sort(feats[:, MX:MY + 1], radii, feats[:, CA:CC + 1], feats[:, OP], depths, grid,
                                      capacity=cap, chunk=chunk, chunk_multiple=XLA_BATCH if backend == "xla" else 1)
        # Padding slots read an appended zero row (opacity 0), so no masking pass over the slots is needed.
        rows = jnp.concatenate([feats, jnp.zeros((1, feats.shape[1]), feats.dtype)])
        slot_index = jnp.where(layout.slot_valid, layout.slot_gid, feats.shape[0])
        if forward_only and backend == "xla":
            colour, depth, trans, _ = splat_xla.forward_visible(
                _not_differentiable(rows[slot_index]), layout.chunk_tile, layout.chunk_k, num_tiles=grid.num_tiles,
                tiles_x=grid.tiles_x, tiles_per_camera=grid.tiles_per_camera, batch=XLA_VISIBLE_BATCH,
                tile_size=grid.tile)
        else:
            spec = splat.TileSpec(grid.tiles_x, grid.tiles_per_camera, grid.num_tiles, backend, flavour, interpret,
                                  XLA_BATCH, grid.tile)
            colour, depth, trans = splat.rasterize(spec, rows, slot_index, layout.chunk_tile, layout.chunk_k,
                                                   layout.chunk_last, layout.n_chunks)
        return colour, depth, trans, layout.camera_intersections, layout.camera_overflow

    if len(capacity) == 1:
        colour, depth, trans, intersections, overflow = composite(capacity[0], feats)
    else:
        # The same count bin_and_sort makes (cheap: per instance, no slots) picks the level.
        needed = jnp.sum(binning.tile_rects(feats[:, MX:MY + 1], radii, feats[:, CA:CC + 1], feats[:, OP], grid)[3])
        level = jnp.minimum(jnp.searchsorted(jnp.asarray(capacity, jnp.int32), needed), len(capacity) - 1)
        colour, depth, trans, intersections, overflow = jax.lax.switch(
            level, [functools.partial(composite, cap) for cap in capacity], feats)
    rgb, alpha, depth = (_untile(x, grid) for x in (colour + trans[..., None] * background, 1.0 - trans, depth))
    if normalize_depth:
        depth = jnp.where(alpha > 0, depth / jnp.where(alpha > 0, alpha, 1.0), 0.0)
    # An overflowing camera lost intersections: poison its image rather than return a wrong one.
    poison = jnp.where(overflow, jnp.nan, 0.0).astype(rgb.dtype)
    rgb, alpha, depth = rgb + poison[:, None, None, None], alpha + poison[:, None, None], depth + poison[:, None, None]
    return RenderOutput(rgb, alpha, depth, intersections, overflow)


@jax.custom_vjp
def _not_differentiable(x):
    """Identity that refuses reverse-mode autodiff with a clear message (the forward-only path has no backward)."""
    return x


def _refuse(x):
    raise InputError("render: forward_only=True renders cannot be differentiated; pass forward_only=False")


_not_differentiable.defvjp(_refuse, lambda res, g: (g,))


def _untile(x: jax.Array, grid: binning.TileGrid) -> jax.Array:
    """``(B*T, tile^2, ...)`` per-tile pixels -> ``(B, H, W, ...)`` image (padding cropped)."""
    t = grid.tile
    extra = x.shape[2:]
    x = x.reshape((grid.cameras, grid.tiles_y, grid.tiles_x, t, t) + extra)
    x = jnp.moveaxis(x, 3, 2).reshape((grid.cameras, grid.tiles_y * t, grid.tiles_x * t) + extra)
    return x[:, : grid.height, : grid.width]
