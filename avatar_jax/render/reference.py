"""Brute-force per-pixel reference renderer in float64 numpy: the rules of DESIGN.md, written plainly.

No tiles lists, no sorting tricks, no kernels: every pixel walks every Gaussian front to back and
applies the tile-overlap test, the alpha rule and early termination literally. It is slow
(``O(N x H x W)`` Python-level work per camera, vectorised over pixels) and meant for tests on
small scenes. The projection is re-derived here independently of :mod:`avatar_jax.render.projection`.
"""

from __future__ import annotations

import numpy as np

from avatar_jax.geometry import Camera
from avatar_jax.render import sh
from avatar_jax.render.renderer import RenderOutput

TILE = 16


def _rotation(q: np.ndarray) -> np.ndarray:
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def _one_camera(means, quats, scales, opacities, colors, viewmat, K, width, height, background, antialiased,
                normalize_depth):
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    if colors.ndim == 3:
        cam_pos = -rot.T @ trans
        d = means - cam_pos
        d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-300)
        y = np.asarray(sh.basis(d.astype(np.float32), sh.degree_of(colors.shape[1])), np.float64)
        rgb = np.maximum(np.einsum("nk,nkc->nc", y, colors) + 0.5, 0.0)
    else:
        rgb = colors
    r = _rotation(quats) * scales[:, None, :]
    sigma = r @ np.swapaxes(r, 1, 2)
    img = np.zeros((height, width, 3))
    dep = np.zeros((height, width))
    T = np.ones((height, width))
    done = np.zeros((height, width), bool)
    jj, ii = np.meshgrid(np.arange(width), np.arange(height))
    u, v = jj + 0.5, ii + 0.5
    tx, ty = jj // TILE, ii // TILE
    cam = means @ rot.T + trans
    for g in np.argsort(cam[:, 2], kind="stable"):
        x, y, z = cam[g]
        if z < 0.01:
            continue
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        # The Jacobian (only) sees x/z, y/z clamped to 1.3 tan(fov/2), the 3DGS rule.
        xj = z * np.clip(x / z, -1.3 * width / (2 * fx), 1.3 * width / (2 * fx))
        yj = z * np.clip(y / z, -1.3 * height / (2 * fy), 1.3 * height / (2 * fy))
        jac = np.array([[fx / z, 0, -fx * xj / z**2], [0, fy / z, -fy * yj / z**2]])
        cov_blur_free = jac @ rot @ sigma[g] @ rot.T @ jac.T
        cov = cov_blur_free + 0.3 * np.eye(2)
        if np.linalg.det(cov) <= 0:
            continue
        opacity = opacities[g]
        if antialiased:  # mip-splatting: keep the blurred Gaussian's total weight
            opacity *= np.sqrt(max(0.0, np.linalg.det(cov_blur_free)) / np.linalg.det(cov))
        radius = np.ceil(3.0 * np.sqrt(np.linalg.eigvalsh(cov)[-1]))
        mx, my = fx * x / z + cx, fy * y / z + cy
        touch = ((TILE * tx < mx + radius) & (mx - radius < TILE * (tx + 1))
                 & (TILE * ty < my + radius) & (my - radius < TILE * (ty + 1)))
        conic = np.linalg.inv(cov)
        dx, dy = u - mx, v - my
        power = -0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) - conic[0, 1] * dx * dy
        alpha = np.minimum(0.99, opacity * np.exp(power))
        use = touch & ~done & (alpha >= 1.0 / 255.0)
        t_next = T * (1.0 - alpha)
        stop = use & (t_next < 1e-4)
        done |= stop
        use &= ~stop
        w = np.where(use, alpha * T, 0.0)
        img += w[..., None] * rgb[g]
        dep += w * z
        T = np.where(use, t_next, T)
    alpha = 1.0 - T
    if normalize_depth:
        dep = np.where(alpha > 0, dep / np.where(alpha > 0, alpha, 1.0), 0.0)
    return img + T[..., None] * background, alpha, dep


def render_reference(means, quats, scales, opacities, colors, camera: Camera, *, background=(0.0, 0.0, 0.0),
                     antialiased: bool = False, normalize_depth: bool = False) -> RenderOutput:
    """Same signature and outputs as :func:`avatar_jax.render.render` (numpy float64 arrays).

    Gaussians ``(N,...)`` are seen by every camera; ``(B,N,...)`` give one set per camera of a batch.
    """
    args = [np.asarray(a, np.float64) for a in (means, quats, scales, opacities, colors)]
    bg = np.broadcast_to(np.asarray(background, np.float64), (3,))
    viewmat, K = np.asarray(camera.viewmat, np.float64), np.asarray(camera.K, np.float64)
    opts = (camera.width, camera.height, bg, antialiased, normalize_depth)
    if viewmat.ndim == 2:
        return RenderOutput(*_one_camera(*args, viewmat, K, *opts))
    per_camera = args[0].ndim == 3
    outs = [_one_camera(*[a[b] for a in args] if per_camera else args, viewmat[b], K[b], *opts)
            for b in range(len(viewmat))]
    return RenderOutput(*(np.stack(x) for x in zip(*outs, strict=True)))
