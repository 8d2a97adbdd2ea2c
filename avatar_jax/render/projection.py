"""EWA projection of 3D Gaussians to screen space for one camera (DESIGN.md rasterisation rules).

Per Gaussian: ``Sigma = R S S^T R^T`` (R from the (w,x,y,z) quaternion, normalised here), camera-space
mean ``t = W mu + w``, Jacobian ``J`` of the pinhole map at ``t`` with ``x/z`` and ``y/z`` clamped to
``+-1.3 tan(fov/2)`` (the 3DGS rule: a Gaussian far outside the view at small depth would otherwise get a
huge, meaningless footprint; the mean itself is not clamped), ``Sigma2D = J W Sigma W^T J^T + 0.3 I``,
conic ``Sigma2D^-1`` and integer radius ``ceil(3 sqrt(lambda_max))``. Culled Gaussians (``z < 0.01``)
get radius 0, which makes them touch no tile. Everything is plain jnp, so gradients reach the means,
quaternions, scales and the camera's ``viewmat`` through ordinary autodiff.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from avatar_jax.geometry import quaternion

EPS2D = 0.3
NEAR = 0.01
JACOBIAN_CLAMP = 1.3  # x/z, y/z limited to this many tan(fov/2) for the Jacobian only


# Full float32 for the geometry's small matrix products: on GPUs the default precision of a float32 dot is
# TF32 (10-bit mantissa), which moved rendered pixels by ~2e-3 against the float64 reference on an H200.
EXACT = jax.lax.Precision.HIGHEST


class Projected(NamedTuple):
    means2d: jax.Array  # (N,2) pixel coordinates (u, v)
    conics: jax.Array  # (N,3) upper triangle (a, b, c) of Sigma2D^-1
    depths: jax.Array  # (N,) camera-space z
    radii: jax.Array  # (N,) float holding an integer; 0 = culled
    opacities: jax.Array  # (N,) opacities to composite with (antialias-compensated when asked; 0 = culled)


def covariance3d(quats: jax.Array, scales: jax.Array) -> jax.Array:
    """``quats (N,4)`` wxyz, ``scales (N,3)`` linear -> ``Sigma (N,3,3) = R S S^T R^T``."""
    rs = quaternion.to_matrix(quats) * scales[:, None, :]
    return jnp.matmul(rs, jnp.swapaxes(rs, -1, -2), precision=EXACT)


def project(means: jax.Array, quats: jax.Array, scales: jax.Array, opacities: jax.Array, viewmat: jax.Array,
            K: jax.Array, width: int, height: int, antialiased: bool = False) -> Projected:
    """Project ``N`` Gaussians with one camera (``viewmat (4,4)``, ``K (3,3)``, image ``width x height``).

    ``antialiased``: multiply each opacity by ``sqrt(det(Sigma2D - 0.3 I) / det(Sigma2D))`` (the
    mip-splatting compensation gsplat calls "antialiased"), so that the 0.3 px blur does not make thin
    or distant Gaussians look fatter and brighter than they are.
    """
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    t = jnp.matmul(means, rot.T, precision=EXACT) + trans
    x, y, z = t[:, 0], t[:, 1], t[:, 2]
    valid = z >= NEAR
    zs = jnp.where(valid, z, 1.0)  # keeps culled rows finite so no NaN leaks into gradients
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    means2d = jnp.stack([fx * x / zs + cx, fy * y / zs + cy], axis=-1)
    lim_x = JACOBIAN_CLAMP * width / (2.0 * fx)
    lim_y = JACOBIAN_CLAMP * height / (2.0 * fy)
    xc = zs * jnp.clip(x / zs, -lim_x, lim_x)
    yc = zs * jnp.clip(y / zs, -lim_y, lim_y)
    zero = jnp.zeros_like(zs)
    jac = jnp.stack(
        [jnp.stack([fx / zs, zero, -fx * xc / (zs * zs)], -1), jnp.stack([zero, fy / zs, -fy * yc / (zs * zs)], -1)],
        axis=-2,
    )  # (N,2,3)
    jw = jnp.matmul(jac, rot, precision=EXACT)
    cov2d = jnp.matmul(jnp.matmul(jw, covariance3d(quats, scales), precision=EXACT), jnp.swapaxes(jw, -1, -2),
                       precision=EXACT)
    a = cov2d[:, 0, 0] + EPS2D
    b = 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0])
    c = cov2d[:, 1, 1] + EPS2D
    det = a * c - b * b
    valid = valid & (det > 0)
    det = jnp.where(valid, det, 1.0)
    if antialiased:
        det_blur_free = cov2d[:, 0, 0] * cov2d[:, 1, 1] - b * b
        opacities = opacities * jnp.sqrt(jnp.clip(det_blur_free / det, 0.0, 1.0))
    conics = jnp.stack([c / det, -b / det, a / det], axis=-1)
    mid = 0.5 * (a + c)
    lam = mid + jnp.sqrt(jnp.maximum(mid * mid - det, 0.0))
    radii = jnp.where(valid, jnp.ceil(3.0 * jnp.sqrt(jax.lax.stop_gradient(lam))), 0.0)
    means2d = jnp.where(valid[:, None], means2d, 0.0)
    conics = jnp.where(valid[:, None], conics, 0.0)
    opacities = jnp.where(valid, opacities, 0.0)
    return Projected(means2d, conics, z, jax.lax.stop_gradient(radii), opacities)
