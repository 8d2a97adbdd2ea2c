"""The XLA path and the dense splatter against the brute-force per-pixel reference (DESIGN.md rules)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.errors import InputError
from avatar_jax.geometry import Camera, orbit
from avatar_jax.render import intersection_count, render
from avatar_jax.render.dense import render_dense
from avatar_jax.render.reference import render_reference
from avatar_jax.render.scenes import crowded_tile_scene, front_camera, random_scene

BG = (0.2, 0.1, 0.3)


def assert_close(out, ref, atol=1e-5):
    for name, a, b in zip(("rgb", "alpha", "depth"), out, ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), b, atol=atol, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("sh_degree", [None, 3])
def test_xla_matches_reference_on_hard_scene(rng, sh_degree):
    scene = random_scene(rng, 60, sh_degree=sh_degree)
    cam = front_camera(40, 24)  # not a multiple of the 16-pixel tile
    ref = render_reference(**scene, camera=cam, background=BG)
    assert ref.alpha.max() > 0.5 and ref.alpha.min() < 0.5  # the scene is neither empty nor saturated
    out = render(**scene, camera=cam, background=BG, backend="xla")
    assert out.rgb.shape == (24, 40, 3) and out.alpha.shape == (24, 40) and out.depth.shape == (24, 40)
    assert_close(out, ref)


def test_batched_cameras_and_dense_splatter(rng):
    scene = random_scene(rng, 40, sh_degree=2)
    cams = orbit(3, radius=4.0, width=24, height=20, elevation_deg=10.0)
    ref = render_reference(**scene, camera=cams, background=BG)
    out = render(**scene, camera=cams, background=BG, backend="xla")
    assert out.rgb.shape == (3, 20, 24, 3)
    assert_close(out, ref)
    assert_close(render_dense(**scene, camera=cams, background=BG, block=128), ref)


def test_jit_with_and_without_capacity_matches_eager(rng):
    scene = random_scene(rng, 30)
    cam = front_camera(32, 32)
    eager = render(**scene, camera=cam, background=jnp.array(BG), backend="xla")
    exact = intersection_count(scene["means"], scene["quats"], scene["scales"], cam)
    f_bound = jax.jit(lambda s, c: render(**s, camera=c, background=jnp.array(BG), backend="xla"))
    f_cap = jax.jit(lambda s, c: render(**s, camera=c, background=jnp.array(BG), backend="xla", capacity=exact))
    assert_close(f_bound(scene, cam), eager, atol=1e-6)
    assert_close(f_cap(scene, cam), eager, atol=1e-6)


def test_capacity_overflow_is_never_silent(rng):
    scene = random_scene(rng, 30)
    cam = front_camera(32, 32)
    exact = intersection_count(scene["means"], scene["quats"], scene["scales"], cam)
    assert exact > 8
    # Eager: a too-small capacity is retried with a large enough one, the image is exact.
    ref = render_reference(**scene, camera=cam)
    assert_close(render(**scene, camera=cam, backend="xla", capacity=4), ref)
    # Under jit: refused at run time with a message that says what to pass.
    f = jax.jit(lambda s: render(**s, camera=cam, backend="xla", capacity=4))
    with pytest.raises(Exception, match=f"{exact} tile-Gaussian intersections exceed capacity=4"):
        jax.block_until_ready(f(scene))


def test_ten_thousand_gaussians_in_one_tile(rng):
    """10,000 Gaussians in a single 16x16 tile: every one is composited, none is dropped."""
    n = 10_000
    cam = front_camera(16, 16)
    scene = crowded_tile_scene(rng, n, cam, scale=0.004, opacity=0.02)
    assert intersection_count(scene["means"], scene["quats"], scene["scales"], cam) >= n
    ref = render_reference(**scene, camera=cam)
    out = render(**scene, camera=cam, backend="xla")
    assert_close(out, ref)
    # The farthest 1,000 Gaussians visibly matter: dropping them (a truncating renderer) changes the image.
    near = np.argsort(scene["means"][:, 2])[: n - 1000]
    cut = render(**{k: v[near] for k, v in scene.items()}, camera=cam, backend="xla")
    assert np.abs(np.asarray(cut.alpha) - ref.alpha).max() > 1e-2


def test_empty_and_culled_scene_shows_background():
    n = 4
    scene = dict(means=np.array([[0, 0, -5.0]] * n, np.float32), quats=np.tile([1.0, 0, 0, 0], (n, 1)),
                 scales=np.full((n, 3), 0.1), opacities=np.ones(n), colors=np.ones((n, 3)))
    out = render(**scene, camera=front_camera(20, 20), background=BG, backend="xla")
    np.testing.assert_allclose(out.rgb, np.broadcast_to(BG, (20, 20, 3)), atol=1e-7)
    np.testing.assert_allclose(out.alpha, 0.0)
    np.testing.assert_allclose(out.depth, 0.0)


def test_non_finite_inputs_raise_clear_errors(rng):
    scene = random_scene(rng, 10)
    cam = front_camera(16, 16)
    bad = dict(scene, means=scene["means"].copy())
    bad["means"][3, 1] = np.nan
    with pytest.raises(InputError, match="non-finite values .* in means"):
        render(**bad, camera=cam, backend="xla")
    bad_cam = Camera(cam.viewmat.at[0, 3].set(jnp.inf), cam.K, 16, 16)
    with pytest.raises(InputError, match="in viewmat"):
        render(**scene, camera=bad_cam, backend="xla")
    f = jax.jit(lambda s: render(**s, camera=cam, backend="xla", capacity=4096))
    with pytest.raises(Exception, match="non-finite values .* in means"):
        jax.block_until_ready(f(bad))
    jax.block_until_ready(f(scene))  # finite inputs pass the same compiled check


def test_bad_shapes_and_options_raise_input_error(rng):
    scene = random_scene(rng, 5)
    cam = front_camera(16, 16)
    with pytest.raises(InputError, match=r"quats must have shape \(5, 4\)"):
        render(**dict(scene, quats=scene["quats"][:, :3]), camera=cam)
    with pytest.raises(InputError, match="SH colours need"):
        render(**dict(scene, colors=np.zeros((5, 5, 3), np.float32)), camera=cam)
    with pytest.raises(InputError, match="backend must be"):
        render(**scene, camera=cam, backend="cuda")
    with pytest.raises(InputError, match="chunk must be a positive power of two"):
        render(**scene, camera=cam, chunk=12)
