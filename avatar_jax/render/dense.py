"""Naive dense splatter: every Gaussian against every pixel in plain jnp (the benchmark baseline).

Same rules and outputs as :func:`avatar_jax.render.render`, with no tile lists: for a block of pixels
it scans all depth-sorted Gaussians front to back, evaluating each at every pixel, and lets
autodiff do the backward pass. Pixels are
processed in blocks (``lax.map``) so that it runs at all; its cost is ``O(N x H x W)`` regardless
of how small the Gaussians are.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from avatar_jax.geometry import Camera
from avatar_jax.render import binning
from avatar_jax.render.renderer import RenderOutput, camera_arrays, project_instances


def _pixels(feats, radius, u, v, tx, ty):
    """``feats (N,F)`` sorted by depth, pixel arrays ``(P,)`` -> colour ``(P,3)``, depth, T.

    A ``lax.scan`` over all N Gaussians, each tested against every pixel of the block: the plain
    front-to-back loop with no culling by tiles lists (the tile-overlap test is applied per pair).
    """

    def step(state, x):
        colour, depth, trans, done = state
        f, r = x
        touch = ((16.0 * tx < f[0] + r) & (f[0] - r < 16.0 * (tx + 1))
                 & (16.0 * ty < f[1] + r) & (f[1] - r < 16.0 * (ty + 1)) & (r > 0))
        dx, dy = u - f[0], v - f[1]
        power = -0.5 * (f[2] * dx * dx + f[4] * dy * dy) - f[3] * dx * dy
        alpha = jnp.minimum(0.99, f[5] * jnp.exp(power))
        use = touch & ~done & (alpha >= 1.0 / 255.0)
        t_next = trans * (1.0 - alpha)
        stop = use & (t_next < 1e-4)
        use = use & ~stop
        w = jnp.where(use, alpha * trans, 0.0)
        state = (colour + w[:, None] * f[6:9], depth + w * f[9], jnp.where(use, t_next, trans), done | stop)
        return state, None

    p = u.shape[0]
    init = (jnp.zeros((p, 3), feats.dtype), jnp.zeros((p,), feats.dtype), jnp.ones((p,), feats.dtype),
            jnp.zeros((p,), bool))
    (colour, depth, trans, _), _ = jax.lax.scan(step, init, (feats, radius))
    return colour, depth, trans


@functools.partial(jax.jit, static_argnames=("width", "height", "block"))
def _dense(means, quats, scales, opacities, colors, viewmats, Ks, background, width, height, block):
    feats, radii, depths = project_instances(means, quats, scales, opacities, colors, viewmats, Ks, width, height)
    cams, n = depths.shape
    feats = feats.reshape(cams, n, -1)
    radii = radii.reshape(cams, n)
    jj, ii = jnp.meshgrid(jnp.arange(width), jnp.arange(height))
    jj, ii = jj.reshape(-1), ii.reshape(-1)
    pad = -len(jj) % block
    jj, ii = jnp.pad(jj, (0, pad)), jnp.pad(ii, (0, pad))
    pix = (jj + 0.5, ii + 0.5, (jj // binning.TILE).astype(jnp.float32), (ii // binning.TILE).astype(jnp.float32))
    pix = [p.astype(feats.dtype).reshape(-1, block) for p in pix]

    def one_camera(f, r, z):
        order = jnp.argsort(jax.lax.stop_gradient(z), stable=True)
        f, r = f[order], r[order]
        # Rematerialise per block under autodiff, else the backward would keep N x H x W residuals.
        return jax.lax.map(jax.checkpoint(lambda p: _pixels(f, r, *p)), pix)

    colour, depth, trans = jax.vmap(one_camera)(feats, radii, depths)
    colour = colour.reshape(cams, -1, 3)[:, : width * height].reshape(cams, height, width, 3)
    depth = depth.reshape(cams, -1)[:, : width * height].reshape(cams, height, width)
    trans = trans.reshape(cams, -1)[:, : width * height].reshape(cams, height, width)
    return RenderOutput(colour + trans[..., None] * background, 1.0 - trans, depth)


def render_dense(means, quats, scales, opacities, colors, camera: Camera, *, background=(0.0, 0.0, 0.0),
                 block: int = 1024) -> RenderOutput:
    """Same inputs and outputs as :func:`avatar_jax.render.render`; ``block`` pixels per step."""
    single, viewmats, Ks = camera_arrays(camera)
    bg = jnp.broadcast_to(jnp.asarray(background, jnp.float32), (3,))
    out = _dense(jnp.asarray(means), jnp.asarray(quats), jnp.asarray(scales), jnp.asarray(opacities),
                 jnp.asarray(colors), viewmats, Ks, bg, camera.width, camera.height, block)
    return RenderOutput(*(x[0] for x in out[:3])) if single else out
