"""Gradients of the XLA path: against autodiff of the dense splatter and against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.geometry import Camera
from avatar_jax.render import render
from avatar_jax.render.dense import render_dense
from avatar_jax.render.scenes import front_camera, random_scene

NAMES = ("means", "quats", "scales", "opacities", "colors", "viewmat", "background")


def make_loss(fn, cam, rng, **kwargs):
    h, w = cam.height, cam.width
    wr, wa, wd = (jnp.asarray(rng.normal(size=s)) for s in ((h, w, 3), (h, w), (h, w)))

    def loss(means, quats, scales, opacities, colors, viewmat, background):
        out = fn(means, quats, scales, opacities, colors, Camera(viewmat, cam.K, w, h), background=background,
                 **kwargs)
        return jnp.sum(out.rgb * wr) + jnp.sum(out.alpha * wa) + jnp.sum(out.depth * wd)

    return loss


def scene_args(scene, cam, dtype=np.float32):
    bg = np.array([0.2, 0.1, 0.3])
    return tuple(np.asarray(a, dtype) for a in (*scene.values(), cam.viewmat, bg))


def test_xla_gradients_match_dense_autodiff(rng):
    scene = random_scene(rng, 30, sh_degree=2)
    cam = front_camera(32, 24)
    args = scene_args(scene, cam)
    dense = jax.grad(make_loss(render_dense, cam, np.random.default_rng(7), block=256), argnums=range(7))(*args)
    grads = jax.grad(make_loss(render, cam, np.random.default_rng(7), backend="xla", capacity=8192),
                     argnums=range(7))(*args)
    for name, g, d in zip(NAMES, grads, dense, strict=True):
        assert np.abs(d).max() > 0, name  # every input really receives gradient
        np.testing.assert_allclose(g, d, rtol=1e-4, atol=2e-4 * np.abs(d).max(), err_msg=name)


@pytest.mark.slow
def test_xla_gradients_match_finite_differences(rng):
    """Directional derivatives in float64, one random direction per input (camera extrinsics included)."""
    with jax.enable_x64(True):
        scene = random_scene(rng, 20, sh_degree=1)
        cam = front_camera(24, 24)
        args = scene_args(scene, cam, np.float64)
        loss = jax.jit(make_loss(render, cam, rng, backend="xla", capacity=8192))
        grads = jax.grad(loss, argnums=range(7))(*args)
        eps = 1e-6
        for i, name in enumerate(NAMES):
            d = rng.normal(size=args[i].shape)
            if name == "viewmat":
                d[3] = 0.0  # the bottom row of a rigid transform is not a free parameter
            plus = list(args)
            minus = list(args)
            plus[i] = args[i] + eps * d
            minus[i] = args[i] - eps * d
            fd = (float(loss(*plus)) - float(loss(*minus))) / (2 * eps)
            analytic = float(np.sum(np.asarray(grads[i]) * d))
            assert abs(fd) > 1e-3, name
            np.testing.assert_allclose(analytic, fd, rtol=1e-4, err_msg=name)
