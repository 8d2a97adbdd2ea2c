import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.geometry import camera as cam_lib


def test_look_at_follows_opencv_convention():
    cam = cam_lib.look_at(eye=(0.0, 0.0, -5.0), target=(0, 0, 0), width=64, height=48, fov_y_deg=60.0)
    # target projects to the image centre, at depth 5
    uv, z = cam.project(jnp.array([[0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(uv[0], [32.0, 24.0], atol=1e-4)
    np.testing.assert_allclose(z[0], 5.0, atol=1e-5)
    # world up (+y) appears towards the top of the image (smaller v); camera right is world -x here
    uv_up, _ = cam.project(jnp.array([[0.0, 1.0, 0.0]]))
    assert uv_up[0, 1] < 24.0
    uv_right, _ = cam.project(jnp.array([[-1.0, 0.0, 0.0]]))
    assert uv_right[0, 0] > 32.0
    np.testing.assert_allclose(cam.position, [0, 0, -5], atol=1e-5)
    f = 24.0 / np.tan(np.radians(30.0))
    np.testing.assert_allclose(uv_up[0, 1], 24.0 - f * 1.0 / 5.0, atol=1e-3)


def test_orbit_cameras_all_look_at_target():
    cams = cam_lib.orbit(8, radius=3.0, width=32, height=32, target=(0.1, 0.5, 0.0), elevation_deg=20.0)
    assert cams.batch_shape == (8,) and len(cams) == 8
    for k in range(8):
        uv, z = cams[k].project(jnp.array([[0.1, 0.5, 0.0]]))
        np.testing.assert_allclose(uv[0], [16.0, 16.0], atol=1e-3)
        np.testing.assert_allclose(z[0], 3.0, atol=1e-4)
    pos = np.asarray(cams.position)
    assert np.all(pos[:, 1] > 0.5)  # positive elevation is above the target
    np.testing.assert_allclose(pos[0], [0.1, 0.5 + 3 * np.sin(np.radians(20)), -3 * np.cos(np.radians(20))],
                               atol=1e-4)


def test_camera_is_a_pytree_with_static_size_and_differentiable_viewmat():
    cam = cam_lib.look_at(eye=(0.0, 0.0, -4.0), width=16, height=16)
    leaves = jax.tree_util.tree_leaves(cam)
    assert len(leaves) == 2  # viewmat and K; width/height are static

    def f(c):
        uv, _ = c.project(jnp.array([[0.2, 0.1, 0.0]]))
        return jnp.sum(uv)

    g = jax.grad(f)(cam)
    assert np.any(np.asarray(g.viewmat) != 0)
    out = jax.jit(f)(cam)
    assert np.isfinite(float(out))


def test_camera_errors():
    with pytest.raises(ValueError, match="coincide"):
        cam_lib.look_at(eye=(1, 1, 1), target=(1, 1, 1), width=8, height=8)
    with pytest.raises(ValueError, match="parallel"):
        cam_lib.look_at(eye=(0, 5, 0), target=(0, 0, 0), width=8, height=8)
    with pytest.raises(ValueError, match="positive"):
        cam_lib.Camera(jnp.eye(4), jnp.eye(3), 0, 8)
    with pytest.raises(ValueError, match="viewmat"):
        cam_lib.Camera(jnp.eye(3), jnp.eye(3), 8, 8)
    with pytest.raises(ValueError, match="different image sizes"):
        cam_lib.stack([cam_lib.look_at(eye=(0, 0, -1), width=8, height=8),
                       cam_lib.look_at(eye=(0, 0, -1), width=16, height=8)])
