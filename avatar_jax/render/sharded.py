"""``render_sharded``: the renderer over a ``("data","fsdp","model")`` mesh, cameras split across devices.

Mosaic (TPU) and Triton (GPU) kernels cannot be partitioned by XLA's SPMD partitioner, so the
per-device work runs inside :func:`jax.shard_map`: every device renders its slice of the camera
batch (and of the per-frame Gaussians, when they carry a batch axis) with the ordinary
:func:`~avatar_jax.render.render`. The same wrapper serves the XLA backend, so one code path runs
on every backend and under ``jit``/``grad``: the transpose of shard_map sums the Gaussians'
gradients over the batch axes, as a data-parallel train step needs.

The batch axes come from the one rules table (:data:`~avatar_jax.train.sharding.LOGICAL_AXIS_RULES`,
logical axis ``"batch"``); mesh axes that hold no batch (``"model"``) see replicated work.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from avatar_jax.errors import InputError
from avatar_jax.geometry import Camera
from avatar_jax.render import checks
from avatar_jax.render.renderer import RenderOutput, intersection_count, render
from avatar_jax.train.sharding import logical_to_mesh_spec


def batch_axes() -> tuple[str, ...]:
    """Mesh axes that split the camera/frame batch, from the rules table (``("data","fsdp")``)."""
    spec = logical_to_mesh_spec(("batch",))[0]
    return () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)


def batch_shards(mesh: Mesh) -> int:
    """Number of slices the batch is cut into on ``mesh`` (product of the batch axes' sizes)."""
    return math.prod(mesh.shape[a] for a in batch_axes() if a in mesh.shape)


def _exact_capacity(means, quats, scales, opacities, camera: Camera, per_frame: bool, shards: int) -> int:
    """Eager only: the largest per-device intersection count, rounded up to a power of two."""
    b = len(camera) // shards
    counts = []
    for s in range(shards):
        sl = slice(s * b, (s + 1) * b)
        g = (means[sl], quats[sl], scales[sl], opacities[sl]) if per_frame else (means, quats, scales, opacities)
        counts.append(intersection_count(*g[:3], camera[sl], opacities=g[3]))
    return 1 << max(0, max(counts) - 1).bit_length()


def render_sharded(mesh: Mesh, means, quats, scales, opacities, colors, camera: Camera, *,
                   background=(0.0, 0.0, 0.0), capacity: int | None = None, **render_kwargs) -> RenderOutput:
    """Render a batch of ``B`` cameras with the batch split over the mesh's batch axes.

    Args:
      mesh: a mesh with axes ``("data","fsdp","model")`` (see :func:`avatar_jax.train.sharding.make_mesh`);
        ``B`` must be a multiple of ``data x fsdp``.
      means, quats, scales, opacities, colors: the Gaussians as :func:`render` takes them, shared by
        all cameras (``(N,...)``, replicated), or per frame with a leading ``B`` axis (``(B,N,...)``,
        split like the cameras).
      camera: a batch of ``B`` cameras (``viewmat (B,4,4)``, ``K (B,3,3)``).
      background: ``(3,)`` colour behind the Gaussians, replicated.
      capacity: intersection slots per device. ``None``: exact (eager inputs) or the renderer's
        own bound (traced inputs); see :mod:`avatar_jax.render.renderer`.
      **render_kwargs: passed to :func:`render` (``backend``, ``pallas_platform``, ``interpret``, ``chunk``...).

    Returns:
      :class:`RenderOutput` with ``(B,H,W,...)`` images and ``(B,)`` ``n_intersections`` / ``overflow``,
      all sharded over the batch axes. Under ``jit`` an overflowing camera is NaN and flagged (no host
      callback); ``capacity`` then counts the slots of one device's cameras.
    """
    if not isinstance(camera, Camera) or camera.batch_shape == ():
        raise InputError("render_sharded: camera must be a batch of cameras (viewmat (B,4,4)); "
                         "use render() for a single camera")
    missing = [a for a in batch_axes() if a not in mesh.shape]
    if missing:
        raise InputError(f"render_sharded: mesh axes {tuple(mesh.shape)} lack the batch axes {missing}")
    shards, cams = batch_shards(mesh), len(camera)
    if cams % shards:
        raise InputError(f"render_sharded: {cams} cameras cannot be split evenly over {shards} devices "
                         f"(mesh batch axes {batch_axes()}); use a multiple of {shards}")
    per_frame = np.ndim(means) == 3
    if per_frame and np.shape(means)[0] != cams:
        raise InputError(f"render_sharded: per-frame Gaussians have {np.shape(means)[0]} frames "
                         f"but there are {cams} cameras")
    if capacity is None and checks.is_concrete(means, quats, scales, opacities, camera):
        capacity = _exact_capacity(means, quats, scales, opacities, camera, per_frame, shards)

    batch = PartitionSpec(batch_axes())
    g_spec = batch if per_frame else PartitionSpec()
    in_specs = ((g_spec,) * 5, batch, PartitionSpec())

    def local(gaussians, cam, bg):
        # Each device sees B / shards cameras; the renderer sizes its tiles for that local batch.
        return render(*gaussians, cam, background=bg, capacity=capacity, **render_kwargs)

    # check_vma=False: pallas_call outputs carry no varying-axes type; the transpose then divides the
    # images' cotangents over the replicated "model" axis and psums the Gaussians' gradients over all axes.
    sharded = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=batch, check_vma=False)
    return sharded((means, quats, scales, opacities, colors), camera, jnp.asarray(background, jnp.float32))
