"""Pinhole cameras in the OpenCV convention (x right, y down, z forward), as DESIGN.md fixes.

A :class:`Camera` is a pytree: ``viewmat`` (world-to-camera) and ``K`` are arrays (so gradients
reach the extrinsics), ``width`` and ``height`` are static. One camera has ``viewmat (4,4)`` and
``K (3,3)``; a batch of ``B`` cameras has ``(B,4,4)`` and ``(B,3,3)`` with one shared image size.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Camera:
    viewmat: jax.Array  # (4,4) or (B,4,4) world -> camera
    K: jax.Array  # (3,3) or (B,3,3) intrinsics
    width: int = dataclasses.field(metadata=dict(static=True))
    height: int = dataclasses.field(metadata=dict(static=True))

    def __post_init__(self):
        if not (isinstance(self.width, int | np.integer) and isinstance(self.height, int | np.integer)):
            raise TypeError(f"Camera width/height must be ints, got {self.width!r}, {self.height!r}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Camera image size must be positive, got {self.width}x{self.height}")
        vshape, kshape = jnp.shape(self.viewmat), jnp.shape(self.K)
        if vshape[-2:] != (4, 4) or kshape[-2:] != (3, 3) or vshape[:-2] != kshape[:-2] or len(vshape) > 3:
            raise ValueError(
                f"Camera expects viewmat (4,4)|(B,4,4) and K (3,3)|(B,3,3) with the same batch, "
                f"got viewmat {vshape} and K {kshape}"
            )

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """``()`` for a single camera, ``(B,)`` for a batch."""
        return tuple(jnp.shape(self.viewmat)[:-2])

    def __len__(self) -> int:
        if not self.batch_shape:
            raise TypeError("a single Camera has no len(); only batches do")
        return self.batch_shape[0]

    def __getitem__(self, index) -> Camera:
        if not self.batch_shape:
            raise TypeError("cannot index a single Camera")
        return Camera(self.viewmat[index], self.K[index], self.width, self.height)

    @property
    def position(self) -> jax.Array:
        """Camera centre in world coordinates, ``(3,)`` or ``(B,3)``."""
        rot, trans = self.viewmat[..., :3, :3], self.viewmat[..., :3, 3]
        return -(jnp.swapaxes(rot, -1, -2) @ trans[..., :, None])[..., 0]

    def world_to_camera(self, points: jax.Array) -> jax.Array:
        """``points (N,3)`` -> camera-space ``(N,3)`` (single camera)."""
        return points @ self.viewmat[:3, :3].T + self.viewmat[:3, 3]

    def project(self, points: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Project world ``points (N,3)`` -> pixel coordinates ``uv (N,2)`` and depth ``z (N,)``.

        ``u = fx x/z + cx``, ``v = fy y/z + cy``; pixel (i, j) has its centre at (j+0.5, i+0.5).
        """
        cam = self.world_to_camera(points)
        z = cam[:, 2]
        u = self.K[0, 0] * cam[:, 0] / z + self.K[0, 2]
        v = self.K[1, 1] * cam[:, 1] / z + self.K[1, 2]
        return jnp.stack([u, v], axis=-1), z


def intrinsics(width: int, height: int, fov_y_deg: float = 30.0) -> np.ndarray:
    """``K (3,3)`` with square pixels, a vertical field of view and the principal point at the centre."""
    if not 0.0 < fov_y_deg < 180.0:
        raise ValueError(f"fov_y_deg must be in (0, 180), got {fov_y_deg}")
    f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], np.float32)


def look_at_viewmat(eye, target, up=(0.0, 1.0, 0.0)) -> jax.Array:
    """World-to-camera ``(4,4)`` for a camera at ``eye`` looking at ``target``; ``up`` is world up.

    Camera axes (OpenCV): z towards the target, y along -up (image rows go down), x = y cross z.
    """
    eye, target, up = (jnp.asarray(a, jnp.float32) for a in (eye, target, up))
    forward = target - eye
    norm = jnp.linalg.norm(forward)
    forward = forward / norm
    down = -up - jnp.dot(-up, forward) * forward
    down_norm = jnp.linalg.norm(down)
    down = down / down_norm
    right = jnp.cross(down, forward)
    rot = jnp.stack([right, down, forward], axis=0)
    trans = -rot @ eye
    top = jnp.concatenate([rot, trans[:, None]], axis=1)
    return jnp.concatenate([top, jnp.array([[0.0, 0.0, 0.0, 1.0]])], axis=0)


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0), *, width: int, height: int,
            fov_y_deg: float = 30.0) -> Camera:
    """A single camera at ``eye`` looking at ``target``."""
    eye_np, target_np, up_np = (np.asarray(a, np.float64) for a in (eye, target, up))
    forward = target_np - eye_np
    if np.linalg.norm(forward) < 1e-9:
        raise ValueError(f"look_at: eye and target coincide at {eye_np.tolist()}")
    if np.linalg.norm(np.cross(forward, up_np)) < 1e-9 * np.linalg.norm(forward) * max(np.linalg.norm(up_np), 1e-30):
        raise ValueError(f"look_at: up {up_np.tolist()} is parallel to the viewing direction")
    return Camera(look_at_viewmat(eye, target, up), jnp.asarray(intrinsics(width, height, fov_y_deg)), width, height)


def orbit(num: int, *, radius: float, width: int, height: int, target=(0.0, 0.0, 0.0),
          elevation_deg: float = 0.0, start_deg: float = 0.0, fov_y_deg: float = 30.0,
          up=(0.0, 1.0, 0.0)) -> Camera:
    """``num`` cameras evenly spaced on a circle around ``target`` (a turntable), batched ``(num,...)``.

    Azimuth 0 puts the camera on the world -z side of the target looking towards +z (a frontal view
    of a subject facing -z); azimuths increase counter-clockwise seen from above (+y).
    """
    if num < 1:
        raise ValueError(f"orbit needs num >= 1 cameras, got {num}")
    if radius <= 0:
        raise ValueError(f"orbit radius must be positive, got {radius}")
    target_np = np.asarray(target, np.float64)
    elev = math.radians(elevation_deg)
    views = []
    for k in range(num):
        az = math.radians(start_deg) + 2.0 * math.pi * k / num
        offset = radius * np.array(
            [math.sin(az) * math.cos(elev), math.sin(elev), -math.cos(az) * math.cos(elev)]
        )
        views.append(look_at_viewmat(target_np + offset, target_np, up))
    K = jnp.broadcast_to(jnp.asarray(intrinsics(width, height, fov_y_deg)), (num, 3, 3))
    return Camera(jnp.stack(views), K, width, height)


def stack(cameras: list[Camera]) -> Camera:
    """Batch single cameras of one image size into one :class:`Camera`."""
    if not cameras:
        raise ValueError("stack needs at least one camera")
    sizes = {(c.width, c.height) for c in cameras}
    if len(sizes) != 1:
        raise ValueError(f"cannot batch cameras of different image sizes: {sorted(sizes)}")
    w, h = sizes.pop()
    return Camera(jnp.stack([c.viewmat for c in cameras]), jnp.stack([c.K for c in cameras]), w, h)
