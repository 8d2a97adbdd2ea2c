"""Unit quaternions in (w, x, y, z) order, the renderer's convention (DESIGN.md)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalize(q: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Scale ``q (..., 4)`` to unit norm; a zero quaternion becomes the identity."""
    norm_sq = jnp.sum(q * q, axis=-1, keepdims=True)
    ident = jnp.zeros_like(q).at[..., 0].set(1.0)
    safe = jnp.where(norm_sq > eps, norm_sq, 1.0)
    return jnp.where(norm_sq > eps, q / jnp.sqrt(safe), ident)


def identity(shape: tuple[int, ...] = (), dtype=jnp.float32) -> jax.Array:
    """Identity quaternions of shape ``shape + (4,)``."""
    return jnp.zeros(tuple(shape) + (4,), dtype).at[..., 0].set(1.0)


def multiply(a: jax.Array, b: jax.Array) -> jax.Array:
    """Hamilton product ``a * b`` (rotation ``b`` first, then ``a``) of ``(..., 4)`` quaternions."""
    aw, ax, ay, az = jnp.moveaxis(a, -1, 0)
    bw, bx, by, bz = jnp.moveaxis(b, -1, 0)
    return jnp.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def conjugate(q: jax.Array) -> jax.Array:
    """``(w, -x, -y, -z)``: the inverse rotation of a unit quaternion."""
    return q * jnp.array([1.0, -1.0, -1.0, -1.0], q.dtype)


def to_matrix(q: jax.Array) -> jax.Array:
    """Rotation matrix ``(..., 3, 3)`` of ``q (..., 4)``; ``q`` is normalised first."""
    w, x, y, z = jnp.moveaxis(normalize(q), -1, 0)
    rows = [
        jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
        jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
        jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
    ]
    return jnp.stack(rows, axis=-2)


def from_matrix(rot: jax.Array) -> jax.Array:
    """Unit quaternion ``(..., 4)`` of a rotation matrix ``(..., 3, 3)`` (Shepperd's method).

    Picks, per matrix, the largest of ``w, x, y, z`` to divide by, so the result is accurate for
    every rotation including angle pi. The sign is not canonicalised.
    """
    m = rot
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # 4 * (component)^2 for each candidate pivot.
    cand = jnp.stack(
        [
            1.0 + trace,
            1.0 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            1.0 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
            1.0 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
        ],
        axis=-1,
    )
    # Clamp inside sqrt so that unselected branches never yield NaN values or NaN gradients.
    s = 2.0 * jnp.sqrt(jnp.maximum(cand, 1e-12))  # s = 4 * component
    qw = jnp.stack(
        [
            0.25 * s[..., 0],
            (m[..., 2, 1] - m[..., 1, 2]) / s[..., 0],
            (m[..., 0, 2] - m[..., 2, 0]) / s[..., 0],
            (m[..., 1, 0] - m[..., 0, 1]) / s[..., 0],
        ],
        axis=-1,
    )
    qx = jnp.stack(
        [
            (m[..., 2, 1] - m[..., 1, 2]) / s[..., 1],
            0.25 * s[..., 1],
            (m[..., 0, 1] + m[..., 1, 0]) / s[..., 1],
            (m[..., 0, 2] + m[..., 2, 0]) / s[..., 1],
        ],
        axis=-1,
    )
    qy = jnp.stack(
        [
            (m[..., 0, 2] - m[..., 2, 0]) / s[..., 2],
            (m[..., 0, 1] + m[..., 1, 0]) / s[..., 2],
            0.25 * s[..., 2],
            (m[..., 1, 2] + m[..., 2, 1]) / s[..., 2],
        ],
        axis=-1,
    )
    qz = jnp.stack(
        [
            (m[..., 1, 0] - m[..., 0, 1]) / s[..., 3],
            (m[..., 0, 2] + m[..., 2, 0]) / s[..., 3],
            (m[..., 1, 2] + m[..., 2, 1]) / s[..., 3],
            0.25 * s[..., 3],
        ],
        axis=-1,
    )
    pivot = jnp.argmax(cand, axis=-1)[..., None]
    q = jnp.where(pivot == 0, qw, jnp.where(pivot == 1, qx, jnp.where(pivot == 2, qy, qz)))
    return normalize(q)


def rotate(q: jax.Array, v: jax.Array) -> jax.Array:
    """Rotate vectors ``v (..., 3)`` by quaternions ``q (..., 4)``."""
    return (to_matrix(q) @ v[..., :, None])[..., 0]


def from_axis_angle(axis: jax.Array, angle: jax.Array) -> jax.Array:
    """Quaternion of a rotation by ``angle (...)`` radians about ``axis (..., 3)``."""
    axis = axis / jnp.linalg.norm(axis, axis=-1, keepdims=True)
    half = 0.5 * jnp.asarray(angle)[..., None]
    return jnp.concatenate([jnp.cos(half), jnp.sin(half) * axis], axis=-1)
