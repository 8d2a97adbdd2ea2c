"""Pallas kernels in interpret mode (both launch layouts) against the XLA path and the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.geometry import Camera
from avatar_jax.render import render
from avatar_jax.render.reference import render_reference
from avatar_jax.render.scenes import crowded_tile_scene, front_camera, random_scene

BG = (0.2, 0.1, 0.3)
FLAVOURS = ["tpu", "gpu"]


def assert_close(out, ref, atol=1e-5):
    for name, a, b in zip(("rgb", "alpha", "depth"), out[:3], ref[:3], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_forward_matches_reference_and_xla(rng, flavour):
    scene = random_scene(rng, 40, sh_degree=1)
    cam = front_camera(32, 32)
    ref = render_reference(**scene, camera=cam, background=BG)
    out = render(**scene, camera=cam, background=BG, backend="pallas", pallas_platform=flavour, chunk=8)
    assert_close(out, ref)
    assert_close(out, render(**scene, camera=cam, background=BG, backend="xla"), atol=2e-6)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_backward_matches_xla(rng, flavour):
    scene = random_scene(rng, 25)
    cam = front_camera(32, 32)
    h, w = cam.height, cam.width
    wr, wa, wd = (jnp.asarray(rng.normal(size=s)) for s in ((h, w, 3), (h, w), (h, w)))

    def loss(backend, means, quats, scales, opacities, colors, viewmat):
        out = render(means, quats, scales, opacities, colors, Camera(viewmat, cam.K, w, h), background=BG,
                     backend=backend, pallas_platform=flavour, chunk=8, capacity=2048)
        return jnp.sum(out.rgb * wr) + jnp.sum(out.alpha * wa) + jnp.sum(out.depth * wd)

    args = (*scene.values(), cam.viewmat)
    g_pallas = jax.grad(lambda *a: loss("pallas", *a), argnums=range(6))(*args)
    g_xla = jax.grad(lambda *a: loss("xla", *a), argnums=range(6))(*args)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors", "viewmat"), g_pallas, g_xla,
                          strict=True):
        assert np.abs(b).max() > 0, name
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max(), err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_crowded_tile_runs_in_many_blocks(rng, flavour):
    """1,500 Gaussians in one tile with 8-Gaussian blocks: ~190 blocks per tile, forward and backward."""
    n = 1500
    cam = front_camera(16, 16)
    scene = crowded_tile_scene(rng, n, cam, scale=0.01, opacity=0.03)
    ref = render_reference(**scene, camera=cam)
    pallas = lambda c: render(**dict(scene, colors=c), camera=cam, backend="pallas", pallas_platform=flavour,
                              chunk=8, capacity=2048)
    assert_close(pallas(scene["colors"]), ref)
    g_pallas = jax.grad(lambda c: jnp.sum(pallas(c).rgb))(scene["colors"])
    g_xla = jax.grad(lambda c: jnp.sum(render(**dict(scene, colors=c), camera=cam, backend="xla",
                                              capacity=2048).rgb))(scene["colors"])
    assert np.abs(np.asarray(g_xla)[np.argsort(scene["means"][:, 2])[-100:]]).max() > 0  # the farthest still count
    np.testing.assert_allclose(g_pallas, g_xla, rtol=1e-4, atol=1e-6)
