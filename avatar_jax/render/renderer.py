"""``render``: Gaussians + camera(s) -> rgb, alpha, depth. Projection, binning and compositing glued together.

Capacity (the static number of tile-Gaussian intersection slots) is the one data-dependent size:

* ``capacity=None`` with concrete inputs (eager call): the exact count is computed first and the
  capacity is the next power of two above it, so recompiles are rare and nothing is dropped.
* ``capacity=None`` under ``jit``/``grad`` tracing: a conservative bound ``cameras x N x tiles``
  that can never overflow (memory ``O(N x tiles)``, not ``O(N x pixels)``). For training at scale
  pass ``capacity`` (e.g. from :func:`intersection_count` on a representative frame, with slack).
* an explicit ``capacity``: eager calls that overflow retry with a large-enough capacity; traced
  calls that overflow raise an :class:`~avatar_jax.errors.InputError` at run time. Never truncated.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from avatar_jax.errors import InputError
from avatar_jax.geometry import Camera
from avatar_jax.kernels import splat
from avatar_jax.kernels.splat_common import NUM_FEATURES
from avatar_jax.render import binning, checks, sh
from avatar_jax.render.projection import project

# Gaussians per chunk (the kernels' block). TPU: a full 128-lane row; GPU (Triton): 64 keeps the
# per-program register footprint small; XLA on CPU: 16 measured fastest (less padding, cache-sized).
CHUNK = {"tpu": 128, "gpu": 64, "xla": 16, "interpret": 16}
XLA_BATCH = 256  # chunks per lax.map step on the XLA path (measured best on a 2-core CPU)


class RenderOutput(NamedTuple):
    rgb: jax.Array  # (H,W,3) or (B,H,W,3)
    alpha: jax.Array  # (H,W) or (B,H,W)
    depth: jax.Array  # (H,W) or (B,H,W): expected camera-space depth, sum z_i alpha_i T_i


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


def _cameras(camera: Camera):
    if not isinstance(camera, Camera):
        raise InputError(f"render: camera must be an avatar_jax.geometry.Camera, got {type(camera).__name__}")
    single = camera.batch_shape == ()
    viewmats = camera.viewmat[None] if single else camera.viewmat
    Ks = camera.K[None] if single else camera.K
    return single, viewmats, Ks


def _project_all(means, quats, scales, opacities, colors, viewmats, Ks):
    """Per camera projection -> flat instance features ``(B*N, F)``, radii ``(B*N,)``, depths ``(B,N)``."""
    proj = jax.vmap(project, in_axes=(None, None, None, 0, 0))(means, quats, scales, viewmats, Ks)
    cams, n = proj.depths.shape
    if colors.ndim == 3:
        rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
        cam_pos = -jnp.einsum("bji,bj->bi", rot, trans)
        rgb = jax.vmap(sh.eval_colors, in_axes=(None, None, 0))(colors, means, cam_pos)
    else:
        rgb = jnp.broadcast_to(colors, (cams, n, 3))
    op = jnp.where(proj.radii > 0, opacities[None], 0.0)
    feats = jnp.concatenate(
        [proj.means2d, proj.conics, op[..., None], rgb, proj.depths[..., None]], axis=-1
    ).reshape(cams * n, NUM_FEATURES)
    return feats, proj.means2d.reshape(cams * n, 2), proj.radii.reshape(-1), proj.depths


@functools.partial(jax.jit, static_argnames=("width", "height"))
def _count(means, quats, scales, viewmats, Ks, width, height):
    proj = jax.vmap(project, in_axes=(None, None, None, 0, 0))(means, quats, scales, viewmats, Ks)
    grid = binning.TileGrid(width, height, viewmats.shape[0])
    return binning.count_intersections(proj.means2d.reshape(-1, 2), proj.radii.reshape(-1), grid)


def intersection_count(means, quats, scales, camera: Camera) -> int:
    """Number of (tile, Gaussian) intersections for these Gaussians and camera(s) (eager)."""
    _, viewmats, Ks = _cameras(camera)
    return int(_count(means, quats, scales, viewmats, Ks, camera.width, camera.height))


def _pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def render(means, quats, scales, opacities, colors, camera: Camera, *, background=(0.0, 0.0, 0.0),
           backend: str = "auto", capacity: int | None = None, chunk: int | None = None,
           pallas_platform: str | None = None, interpret: bool | None = None,
           check_finite: bool = True) -> RenderOutput:
    """Render 3D Gaussians with the 3DGS/gsplat rules of DESIGN.md.

    Args:
      means: ``(N,3)`` world positions.
      quats: ``(N,4)`` rotations (w,x,y,z), normalised here.
      scales: ``(N,3)`` linear standard deviations.
      opacities: ``(N,)`` in [0,1].
      colors: ``(N,3)`` RGB, or ``(N,K,3)`` SH coefficients, ``K = (d+1)^2``, ``d <= 3``.
      camera: one :class:`Camera` (outputs ``(H,W,...)``) or a batch (outputs ``(B,H,W,...)``).
      background: ``(3,)`` colour behind the Gaussians (differentiable).
      backend: ``"auto"`` (pallas on GPU/TPU, xla on CPU), ``"pallas"`` or ``"xla"``.
      capacity: static number of tile-Gaussian intersection slots, see the module docstring.
      chunk: Gaussians per kernel block (default per platform, :data:`CHUNK`); tiles with more
        Gaussians are processed in several blocks.
      pallas_platform: kernel flavour, ``"tpu"`` (Mosaic) or ``"gpu"`` (Triton); default: the device's.
      interpret: run Pallas in interpret mode (default: True when no GPU/TPU is present).
      check_finite: raise :class:`InputError` on NaN/inf inputs (a host callback under jit).

    Returns:
      :class:`RenderOutput` with ``rgb``, ``alpha = 1 - T_final`` and expected ``depth``.
    """
    means, quats, scales, opacities, colors = (jnp.asarray(a) for a in (means, quats, scales, opacities, colors))
    checks.check_shapes(means, quats, scales, opacities, colors)
    single, viewmats, Ks = _cameras(camera)
    dtype = jnp.result_type(means.dtype, jnp.float32)
    background = jnp.broadcast_to(jnp.asarray(background, dtype), (3,))
    chex.assert_rank([means, quats, scales, opacities], [2, 2, 2, 1])
    if check_finite:
        checks.check_finite(dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                                 viewmat=viewmats, K=Ks, background=background))
    if colors.ndim == 3:
        sh.degree_of(colors.shape[1])
    backend, flavour, interp = _resolve_backend(backend, pallas_platform, interpret)
    chunk = int(chunk or CHUNK["interpret" if interp else flavour])
    if chunk < 1 or chunk & (chunk - 1):
        raise InputError(f"render: chunk must be a positive power of two, got {chunk}")

    cams, n = viewmats.shape[0], means.shape[0]
    grid = binning.TileGrid(camera.width, camera.height, cams)
    binning.key_bits(n, grid)
    eager = checks.is_concrete(means, quats, scales, viewmats, Ks)
    if eager:
        needed = int(_count(means, quats, scales, viewmats, Ks, camera.width, camera.height))
        if capacity is None or capacity < needed:
            capacity = _pow2(max(needed, 1))  # automatic retry outside jit: never truncate
    elif capacity is None:
        capacity = max(1, cams * n * grid.tiles_per_camera)
    capacity = int(capacity)

    out = _render_static(means, quats, scales, opacities.astype(dtype), colors.astype(dtype), viewmats, Ks,
                         background, grid=grid, capacity=capacity, chunk=chunk, backend=backend,
                         flavour=flavour, interpret=interp)
    if single:
        out = RenderOutput(*(x[0] for x in out))
    return out


@functools.partial(jax.jit, static_argnames=("grid", "capacity", "chunk", "backend", "flavour", "interpret"))
def _render_static(means, quats, scales, opacities, colors, viewmats, Ks, background, *, grid, capacity, chunk,
                   backend, flavour, interpret):
    feats, means2d, radii, depths = _project_all(means, quats, scales, opacities, colors, viewmats, Ks)
    layout = binning.bin_and_sort(means2d, radii, depths, grid, capacity=capacity, chunk=chunk)
    checks.check_capacity(layout.n_intersections, capacity)
    slot_feats = feats[layout.slot_gid]
    slot_feats = jnp.where(layout.slot_valid[..., None], slot_feats, 0.0)  # padding: opacity 0
    spec = splat.TileSpec(grid.tiles_x, grid.tiles_per_camera, grid.num_tiles, backend, flavour, interpret,
                          XLA_BATCH)
    colour, depth, trans = splat.rasterize(spec, slot_feats, layout.chunk_tile, layout.chunk_k, layout.chunk_last,
                                           layout.n_chunks)
    rgb = colour + trans[..., None] * background
    out = [rgb, 1.0 - trans, depth]
    return RenderOutput(*(_untile(x, grid) for x in out))


def _untile(x: jax.Array, grid: binning.TileGrid) -> jax.Array:
    """``(B*T, 256, ...)`` per-tile pixels -> ``(B, H, W, ...)`` image (padding cropped)."""
    t = binning.TILE
    extra = x.shape[2:]
    x = x.reshape((grid.cameras, grid.tiles_y, grid.tiles_x, t, t) + extra)
    x = jnp.moveaxis(x, 3, 2).reshape((grid.cameras, grid.tiles_y * t, grid.tiles_x * t) + extra)
    return x[:, : grid.height, : grid.width]
