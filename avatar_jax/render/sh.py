"""Real spherical-harmonics colours (degree 0..3) in the standard 3DGS basis.

``colors = max(sum_k coeffs[:, k] * Y_k(dir) + 0.5, 0)`` where ``dir`` is the unit vector from the
camera centre to the Gaussian mean, in world space.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from avatar_jax.errors import InputError

# Normalisation constants of the real SH basis (l = 0..3), sign convention of the 3DGS reference.
_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
       -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def degree_of(num_coeffs: int) -> int:
    """``K = (d+1)^2`` -> ``d``; raises for counts that are not a square in {1, 4, 9, 16}."""
    for d in range(4):
        if (d + 1) ** 2 == num_coeffs:
            return d
    raise InputError(f"SH colours need (d+1)^2 coefficients with d <= 3 (1, 4, 9 or 16), got {num_coeffs}")


def basis(dirs: jax.Array, degree: int) -> jax.Array:
    """SH basis values ``(..., (degree+1)^2)`` at unit directions ``dirs (..., 3)``."""
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    out = [jnp.full_like(x, _C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [_C2[0] * x * y, _C2[1] * y * z, _C2[2] * (2 * zz - xx - yy), _C2[3] * x * z, _C2[4] * (xx - yy)]
    if degree >= 3:
        out += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * x * y * z,
            _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    return jnp.stack(out, axis=-1)


def eval_colors(coeffs: jax.Array, means: jax.Array, cam_pos: jax.Array) -> jax.Array:
    """``coeffs (N,K,3)``, ``means (N,3)``, ``cam_pos (3,)`` -> RGB ``(N,3)`` (offset 0.5, clamped at 0)."""
    degree = degree_of(coeffs.shape[-2])
    d = means - cam_pos
    # Safe normalisation: a Gaussian sitting on the camera centre gets direction (0,0,0) instead of NaN.
    n2 = jnp.sum(d * d, axis=-1, keepdims=True)
    d = d * jnp.where(n2 > 0, jax.lax.rsqrt(jnp.where(n2 > 0, n2, 1.0)), 0.0)
    y = basis(d, degree)
    return jnp.maximum(jnp.einsum("nk,nkc->nc", y, coeffs, precision=jax.lax.Precision.HIGHEST) + 0.5, 0.0)
