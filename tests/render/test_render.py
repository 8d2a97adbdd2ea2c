"""The XLA path and the dense splatter against the brute-force per-pixel reference (DESIGN.md rules)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.errors import InputError
from avatar_jax.geometry import Camera, orbit
from avatar_jax.render import RenderOutput, intersection_count, render
from avatar_jax.render.dense import render_dense
from avatar_jax.render.projection import project
from avatar_jax.render.reference import render_reference
from avatar_jax.render.scenes import border_scene, crowded_tile_scene, front_camera, random_scene

BG = (0.2, 0.1, 0.3)


def assert_close(out, ref, atol=1e-5):
    for name, a, b in zip(("rgb", "alpha", "depth"), out[:3], ref[:3], strict=True):
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
    cams = orbit(2, radius=4.0, width=32, height=32)
    per_cam = [intersection_count(scene["means"], scene["quats"], scene["scales"], cams[b], scene["opacities"])
               for b in range(2)]
    assert per_cam[0] > 8
    # Eager: a too-small capacity is retried with a large enough one, the image is exact.
    ref = render_reference(**scene, camera=cams)
    eager = render(**scene, camera=cams, backend="xla", capacity=4)
    assert_close(eager, ref)
    np.testing.assert_array_equal(eager.n_intersections, per_cam)
    assert not np.asarray(eager.overflow).any()
    # Under jit: the overflow is an output, and an overflowing camera's image is NaN, never a wrong picture.
    f = jax.jit(lambda s, cap: render(**s, camera=cams, backend="xla", capacity=cap), static_argnums=1)
    out = f(scene, per_cam[0] + 1)  # the first camera fits, the second does not
    np.testing.assert_array_equal(out.n_intersections, per_cam)
    np.testing.assert_array_equal(out.overflow, [False, True])
    assert_close(RenderOutput(*(x[:1] for x in out[:3])), RenderOutput(*(x[:1] for x in ref[:3])))
    assert np.isnan(np.asarray(out.rgb[1])).all() and np.isnan(np.asarray(out.depth[1])).all()
    fits = f(scene, sum(per_cam))
    assert not np.asarray(fits.overflow).any()
    assert_close(fits, ref)


def _primitives(obj) -> set[str]:
    """Names of every primitive in a (closed) jaxpr and in all jaxprs nested in its equations' parameters."""
    if hasattr(obj, "eqns"):
        names = set()
        for eqn in obj.eqns:
            names.add(eqn.primitive.name)
            names |= _primitives(list(eqn.params.values()))
        return names
    if hasattr(obj, "jaxpr") and hasattr(obj, "consts"):
        return _primitives(obj.jaxpr)
    if isinstance(obj, list | tuple):
        return set().union(*(_primitives(x) for x in obj)) if obj else set()
    if isinstance(obj, dict):
        return _primitives(list(obj.values()))
    return set()


@pytest.mark.parametrize("backend", ["xla", "pallas"])
def test_jitted_render_and_gradient_have_no_host_callbacks(rng, backend):
    scene = random_scene(rng, 12)
    cam = front_camera(16, 16)

    def loss(means, opacities):
        out = render(means, scene["quats"], scene["scales"], opacities, scene["colors"], cam, backend=backend,
                     pallas_platform="tpu", check_finite=True)
        return jnp.sum(out.rgb) + jnp.sum(out.depth)

    args = (jnp.asarray(scene["means"]), jnp.asarray(scene["opacities"]))
    for fn in (loss, jax.grad(loss, argnums=(0, 1))):
        prims = _primitives(jax.make_jaxpr(jax.jit(fn))(*args).jaxpr)
        assert "sort" in prims and ("pallas_call" in prims) == (backend == "pallas")  # the walk sees inside
        callbacks = {p for p in prims if "callback" in p}
        assert not callbacks, callbacks


def test_jacobian_clamp_bounds_footprints_near_the_border(rng):
    # The example: a 1 cm Gaussian at z = 0.1 far to the side of a 512x512 view.
    cam = front_camera(512, 512)
    fx = float(cam.K[0, 0])
    z, xz = 0.1, 10.0
    point = np.linalg.inv(np.asarray(cam.viewmat)) @ np.array([xz * z, 0.0, z, 1.0])
    proj = project(jnp.asarray(point[None, :3], jnp.float32), jnp.array([[1.0, 0, 0, 0]]), jnp.full((1, 3), 0.01),
                   jnp.ones(1), cam.viewmat, cam.K, 512, 512)
    unclamped = np.array([[fx / z, 0, -fx * xz / z], [0, fx / z, 0]])
    cov = unclamped @ unclamped.T * 1e-4 + 0.3 * np.eye(2)
    assert np.ceil(3 * np.sqrt(np.linalg.eigvalsh(cov)[-1])) > 2000  # what no clamp gives
    assert float(proj.radii[0]) == 234.0  # 3 sigma of the clamped Jacobian
    # Many Gaussians past the clamp that still reach a small image: the renderer equals the reference.
    cam = front_camera(40, 24)
    scene = border_scene(rng, 40, cam)
    ref = render_reference(**scene, camera=cam, background=BG)
    assert ref.alpha.max() > 0.5
    assert_close(render(**scene, camera=cam, background=BG, backend="xla"), ref)


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
    # Under jit the check is off (no host callbacks): a NaN colour shows up in the image instead.
    bad_colour = dict(scene, colors=scene["colors"].copy())
    bad_colour["colors"][0] = np.nan  # Gaussian 0 sits in the visible cluster
    out = jax.jit(lambda s: render(**s, camera=cam, backend="xla", capacity=4096))(bad_colour)
    assert np.isnan(np.asarray(out.rgb)).any()


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
