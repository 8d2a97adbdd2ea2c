"""SE(3) in twist coordinates: hat/vee, exp, log, compose, inverse, and frame integration.

Convention (DESIGN.md): a twist is ``xi = (omega, v)``, rotation first, shape ``(..., 6)``.
``exp`` returns homogeneous ``(..., 4, 4)`` matrices. Integration over frames follows
``T_t = exp(xi_t) @ T_{t-1}`` and is a ``jax.lax.scan``.

Every function is stable and differentiable at zero rotation: the trigonometric coefficients are
evaluated as Taylor series in ``theta**2`` below a threshold and with a "safe" ``theta`` above it,
so neither branch of the ``jnp.where`` ever produces a NaN that could leak into gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from avatar_jax.geometry import quaternion

# Below this theta^2 the series are used. The series are accurate to ~theta^8, i.e. far below
# float32 epsilon at theta^2 < 1e-3, and the closed forms are well conditioned above it.
_SMALL_THETA_SQ = 1e-3


def hat_so3(omega: jax.Array) -> jax.Array:
    """Skew-symmetric matrix of ``omega (..., 3)`` -> ``(..., 3, 3)``; ``hat(w) @ x == cross(w, x)``."""
    wx, wy, wz = omega[..., 0], omega[..., 1], omega[..., 2]
    zero = jnp.zeros_like(wx)
    rows = [
        jnp.stack([zero, -wz, wy], axis=-1),
        jnp.stack([wz, zero, -wx], axis=-1),
        jnp.stack([-wy, wx, zero], axis=-1),
    ]
    return jnp.stack(rows, axis=-2)


def vee_so3(omega_hat: jax.Array) -> jax.Array:
    """Inverse of :func:`hat_so3`: ``(..., 3, 3)`` -> ``(..., 3)`` (antisymmetric part is used)."""
    return 0.5 * jnp.stack(
        [
            omega_hat[..., 2, 1] - omega_hat[..., 1, 2],
            omega_hat[..., 0, 2] - omega_hat[..., 2, 0],
            omega_hat[..., 1, 0] - omega_hat[..., 0, 1],
        ],
        axis=-1,
    )


def hat(xi: jax.Array) -> jax.Array:
    """The se(3) hat operator: twist ``(..., 6)`` -> 4x4 twist matrix ``(..., 4, 4)``."""
    omega, v = xi[..., :3], xi[..., 3:]
    top = jnp.concatenate([hat_so3(omega), v[..., :, None]], axis=-1)  # (..., 3, 4)
    bottom = jnp.zeros(xi.shape[:-1] + (1, 4), xi.dtype)
    return jnp.concatenate([top, bottom], axis=-2)


def vee(xi_hat: jax.Array) -> jax.Array:
    """Inverse of :func:`hat`: ``(..., 4, 4)`` -> ``(..., 6)``."""
    return jnp.concatenate([vee_so3(xi_hat[..., :3, :3]), xi_hat[..., :3, 3]], axis=-1)


def _coefficients(theta_sq: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``A = sin(t)/t``, ``B = (1-cos t)/t^2``, ``C = (t - sin t)/t^3`` as functions of ``t^2``."""
    small = theta_sq < _SMALL_THETA_SQ
    safe_sq = jnp.where(small, 1.0, theta_sq)
    theta = jnp.sqrt(safe_sq)
    a = jnp.where(small, 1.0 - theta_sq / 6.0 + theta_sq**2 / 120.0, jnp.sin(theta) / theta)
    b = jnp.where(small, 0.5 - theta_sq / 24.0 + theta_sq**2 / 720.0, (1.0 - jnp.cos(theta)) / safe_sq)
    c = jnp.where(
        small, 1.0 / 6.0 - theta_sq / 120.0 + theta_sq**2 / 5040.0, (theta - jnp.sin(theta)) / (safe_sq * theta)
    )
    return a, b, c


def exp_so3(omega: jax.Array) -> jax.Array:
    """Rodrigues: ``omega (..., 3)`` -> rotation matrix ``(..., 3, 3)``."""
    theta_sq = jnp.sum(omega * omega, axis=-1)[..., None, None]
    a, b, _ = _coefficients(theta_sq)
    w = hat_so3(omega)
    eye = jnp.eye(3, dtype=omega.dtype)
    return eye + a * w + b * (w @ w)


def exp(xi: jax.Array) -> jax.Array:
    """Exponential map: twist ``(..., 6)`` -> SE(3) matrix ``(..., 4, 4)``.

    ``R = I + A W + B W^2`` and ``t = V v`` with ``V = I + B W + C W^2``.
    """
    omega, v = xi[..., :3], xi[..., 3:]
    theta_sq = jnp.sum(omega * omega, axis=-1)[..., None, None]
    a, b, c = _coefficients(theta_sq)
    w = hat_so3(omega)
    w2 = w @ w
    eye = jnp.eye(3, dtype=xi.dtype)
    rot = eye + a * w + b * w2
    v_mat = eye + b * w + c * w2
    trans = (v_mat @ v[..., :, None])[..., 0]
    return from_rotation_translation(rot, trans)


def log(transform: jax.Array) -> jax.Array:
    """Logarithm: SE(3) matrix ``(..., 4, 4)`` -> twist ``(..., 6)`` with rotation angle in [0, pi].

    The rotation goes through a quaternion (Shepperd's method), which stays accurate near both
    0 and pi, unlike ``arccos`` of the trace.
    """
    rot, trans = transform[..., :3, :3], transform[..., :3, 3]
    q = quaternion.from_matrix(rot)
    # Take the hemisphere w >= 0 so that theta lands in [0, pi].
    q = jnp.where(q[..., :1] < 0, -q, q)
    qw, qv = q[..., 0], q[..., 1:]
    sin_half_sq = jnp.sum(qv * qv, axis=-1)
    small = sin_half_sq < 1e-8
    sin_half = jnp.sqrt(jnp.where(small, 1.0, sin_half_sq))
    theta = 2.0 * jnp.arctan2(sin_half, qw)
    # omega = theta * qv / |qv|; near zero, 2 atan(s/w) / s = (2/w) (1 - s^2 / (3 w^2)) + O(s^4).
    scale = jnp.where(small, 2.0 / qw * (1.0 - sin_half_sq / (3.0 * qw * qw)), theta / sin_half)
    omega = scale[..., None] * qv
    v = _inverse_left_jacobian(omega) @ trans[..., :, None]
    return jnp.concatenate([omega, v[..., 0]], axis=-1)


def _inverse_left_jacobian(omega: jax.Array) -> jax.Array:
    """``V^{-1} = I - W/2 + (1/t^2) (1 - A / (2B)) W^2`` for ``omega (..., 3)``."""
    theta_sq = jnp.sum(omega * omega, axis=-1)[..., None, None]
    a, b, _ = _coefficients(theta_sq)
    small = theta_sq < _SMALL_THETA_SQ
    safe_sq = jnp.where(small, 1.0, theta_sq)
    d = jnp.where(small, 1.0 / 12.0 + theta_sq / 720.0 + theta_sq**2 / 30240.0, (1.0 - a / (2.0 * b)) / safe_sq)
    w = hat_so3(omega)
    eye = jnp.eye(3, dtype=omega.dtype)
    return eye - 0.5 * w + d * (w @ w)


def from_rotation_translation(rot: jax.Array, trans: jax.Array) -> jax.Array:
    """Assemble ``rot (..., 3, 3)`` and ``trans (..., 3)`` into ``(..., 4, 4)``."""
    top = jnp.concatenate([rot, trans[..., :, None]], axis=-1)
    bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], rot.dtype), rot.shape[:-2] + (1, 4))
    return jnp.concatenate([top, bottom], axis=-2)


def identity(shape: tuple[int, ...] = (), dtype=jnp.float32) -> jax.Array:
    """Identity transforms of shape ``shape + (4, 4)``."""
    return jnp.broadcast_to(jnp.eye(4, dtype=dtype), tuple(shape) + (4, 4))


def compose(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` for ``(..., 4, 4)`` transforms (apply ``b`` first)."""
    return a @ b


def inverse(transform: jax.Array) -> jax.Array:
    """Closed-form inverse ``[R^T, -R^T t]`` of ``(..., 4, 4)`` rigid transforms."""
    rot, trans = transform[..., :3, :3], transform[..., :3, 3]
    rot_t = jnp.swapaxes(rot, -1, -2)
    return from_rotation_translation(rot_t, -(rot_t @ trans[..., :, None])[..., 0])


def apply(transform: jax.Array, points: jax.Array) -> jax.Array:
    """Apply ``(..., 4, 4)`` transforms to ``(..., 3)`` points."""
    return (transform[..., :3, :3] @ points[..., :, None])[..., 0] + transform[..., :3, 3]


def integrate(twists: jax.Array, init: jax.Array) -> jax.Array:
    """Integrate per-frame twists: ``T_t = exp(xi_t) @ T_{t-1}`` with ``T_{-1} = init``.

    Args:
      twists: ``(T, M, 6)`` twist per frame and particle.
      init: ``(M, 4, 4)`` transforms before the first frame.

    Returns:
      ``(T, M, 4, 4)``: the transform of every particle after each frame.
    """
    if twists.ndim != 3 or twists.shape[-1] != 6:
        raise ValueError(f"twists must have shape (T, M, 6), got {twists.shape}")
    if init.shape != (twists.shape[1], 4, 4):
        raise ValueError(f"init must have shape (M, 4, 4) = ({twists.shape[1]}, 4, 4), got {init.shape}")

    def step(prev, xi):
        current = compose(exp(xi), prev)
        return current, current

    _, transforms = jax.lax.scan(step, init.astype(twists.dtype), twists)
    return transforms
