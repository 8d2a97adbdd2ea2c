"""Geometry shared by every module: SE(3) twists, quaternions and pinhole cameras."""

from avatar_jax.geometry import quaternion, se3
from avatar_jax.geometry.camera import Camera, intrinsics, look_at, orbit, stack

__all__ = ["Camera", "intrinsics", "look_at", "orbit", "quaternion", "se3", "stack"]
