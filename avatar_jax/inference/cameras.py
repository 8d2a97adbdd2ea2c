"""Camera paths for rendering a bundle: ``front``, ``orbit`` (a turntable over time) or a fixed ``novel`` view.

A path maps output frame indices ``(F,)`` to ``viewmats (F,4,4)`` and ``Ks (F,3,3)``. Views are placed
on the sphere around the bundle's front target at the front camera's distance: azimuth 0 is the front
view, positive azimuths turn counter-clockwise seen from above, positive elevation looks down.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from avatar_jax.errors import InputError
from avatar_jax.geometry.camera import intrinsics, look_at_viewmat

KINDS = ("front", "orbit", "novel")
_look_at_many = jax.jit(jax.vmap(look_at_viewmat, in_axes=(0, None, None)))  # eyes (F,3) -> (F,4,4)


@dataclasses.dataclass(frozen=True)
class CameraPath:
    """``kind``; ``azimuth_deg``/``elevation_deg`` of a novel view; ``period_frames`` of one orbit turn."""

    eye: np.ndarray  # (3,) front camera position
    target: np.ndarray  # (3,)
    up: np.ndarray  # (3,)
    fov_y_deg: float
    width: int
    height: int
    kind: str = "front"
    azimuth_deg: float = 0.0
    elevation_deg: float = 0.0
    period_frames: int = 100

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"camera must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not -89.0 <= self.elevation_deg <= 89.0:
            raise InputError(f"camera elevation must be within +-89 degrees, got {self.elevation_deg}")
        if self.period_frames < 1:
            raise InputError(f"an orbit needs at least one frame per turn, got {self.period_frames}")

    def _eye(self, azimuth_deg: float, elevation_deg: float) -> np.ndarray:
        offset = self.eye - self.target
        radius = float(np.linalg.norm(offset))
        base_az = math.atan2(offset[0], -offset[2])  # the front view's own azimuth (0 for a -z camera)
        az, el = base_az + math.radians(azimuth_deg), math.radians(elevation_deg)
        return self.target + radius * np.array([math.sin(az) * math.cos(el), math.sin(el),
                                                -math.cos(az) * math.cos(el)])

    def cameras(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``frames (F,)`` output frame indices -> ``viewmats (F,4,4)``, ``Ks (F,3,3)`` float32."""
        frames = np.asarray(frames)
        if self.kind == "front":
            views = [self.eye] * len(frames)
        elif self.kind == "novel":
            views = [self._eye(self.azimuth_deg, self.elevation_deg)] * len(frames)
        else:
            views = [self._eye(360.0 * float(f) / self.period_frames, self.elevation_deg) for f in frames]
        vm = (np.asarray(_look_at_many(np.asarray(views, np.float32), self.target.astype(np.float32),
                                       self.up.astype(np.float32))) if len(frames) else np.zeros((0, 4, 4)))
        K = np.broadcast_to(intrinsics(self.width, self.height, self.fov_y_deg), (len(frames), 3, 3))
        return vm.astype(np.float32), np.ascontiguousarray(K, np.float32)


def camera_path(front: dict, width: int, height: int, kind: str = "front", *, azimuth_deg: float = 30.0,
                elevation_deg: float = 0.0, period_frames: int = 100) -> CameraPath:
    """A path around a bundle's ``front`` view (``Bundle.front``) at ``width x height``."""
    return CameraPath(np.asarray(front["eye"], np.float64), np.asarray(front["target"], np.float64),
                      np.asarray(front["up"], np.float64), float(front["fov_y_deg"]), int(width), int(height), kind,
                      float(azimuth_deg), float(elevation_deg), int(period_frames))
