import jax
import jax.numpy as jnp
import numpy as np
import scipy.spatial.transform as sst

from avatar_jax.geometry import quaternion as quat


def random_quats(rng, n):
    q = rng.standard_normal((n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_to_matrix_matches_scipy(rng):
    q = random_quats(rng, 20)
    ref = sst.Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy is (x,y,z,w)
    np.testing.assert_allclose(quat.to_matrix(jnp.asarray(q, jnp.float32)), ref, atol=1e-5)


def test_from_matrix_round_trip_including_pi_rotations(rng):
    q = random_quats(rng, 50)
    # add exact 180-degree rotations, where the trace-based formula breaks down
    q = np.concatenate([q, [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0.6, 0.8, 0]]])
    with jax.enable_x64(True):
        back = np.asarray(quat.from_matrix(quat.to_matrix(jnp.asarray(q))))
    sign = np.sign(np.sum(back * q, axis=1, keepdims=True))
    np.testing.assert_allclose(back * sign, q, atol=1e-9)


def test_multiply_composes_rotations(rng):
    a, b = (jnp.asarray(random_quats(rng, 10), jnp.float32) for _ in range(2))
    np.testing.assert_allclose(quat.to_matrix(quat.multiply(a, b)), quat.to_matrix(a) @ quat.to_matrix(b),
                               atol=1e-5)
    ident = quat.multiply(a, quat.conjugate(a))
    np.testing.assert_allclose(ident, np.broadcast_to([1, 0, 0, 0], (10, 4)), atol=1e-6)


def test_normalize_handles_zero_and_rotate_matches_matrix(rng):
    np.testing.assert_allclose(quat.normalize(jnp.zeros(4)), [1, 0, 0, 0])
    q = jnp.asarray(random_quats(rng, 5), jnp.float32)
    v = jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)
    np.testing.assert_allclose(quat.rotate(q, v), (quat.to_matrix(q) @ v[..., None])[..., 0], atol=1e-6)
    q90 = quat.from_axis_angle(jnp.array([0.0, 0.0, 1.0]), jnp.pi / 2)
    np.testing.assert_allclose(quat.rotate(q90, jnp.array([1.0, 0.0, 0.0])), [0, 1, 0], atol=1e-6)


def test_from_matrix_gradient_is_finite(rng):
    g = jax.grad(lambda m: jnp.sum(quat.from_matrix(m)))(jnp.eye(3))
    assert np.all(np.isfinite(np.asarray(g)))
