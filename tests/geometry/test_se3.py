import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from avatar_jax.geometry import se3


def random_twists(rng, n, scale=1.0):
    return (rng.standard_normal((n, 6)) * scale).astype(np.float64)


def test_hat_vee_round_trip_and_cross_product(rng):
    xi = random_twists(rng, 10).astype(np.float32)
    np.testing.assert_allclose(se3.vee(se3.hat(xi)), xi, atol=1e-7)
    w, x = rng.standard_normal((2, 3))
    np.testing.assert_allclose(se3.hat_so3(w) @ x, np.cross(w, x), atol=1e-6)


@pytest.mark.parametrize("scale", [1e-6, 1e-2, 0.5, 2.0])
def test_exp_matches_matrix_exponential(rng, scale):
    with jax.enable_x64(True):
        xi = random_twists(rng, 16, scale)
        ours = np.asarray(se3.exp(jnp.asarray(xi)))
        for k in range(len(xi)):
            ref = scipy.linalg.expm(np.asarray(se3.hat(xi[k])))
            np.testing.assert_allclose(ours[k], ref, atol=1e-10)


def test_exp_is_a_rigid_transform(rng):
    t = np.asarray(se3.exp(jnp.asarray(random_twists(rng, 32), jnp.float32)))
    rot = t[:, :3, :3]
    np.testing.assert_allclose(rot @ np.swapaxes(rot, 1, 2), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    np.testing.assert_allclose(t[:, 3], np.broadcast_to([0, 0, 0, 1], (32, 4)))


@pytest.mark.parametrize("scale", [0.0, 1e-7, 1e-3, 0.3, 1.5])
def test_log_exp_round_trip(rng, scale):
    with jax.enable_x64(True):
        xi = random_twists(rng, 32, scale)
        # keep rotation angle below pi so the twist is the principal logarithm
        norms = np.linalg.norm(xi[:, :3], axis=1, keepdims=True)
        xi[:, :3] = np.where(norms > 3.0, xi[:, :3] / np.maximum(norms, 1e-12) * 3.0, xi[:, :3])
        back = np.asarray(se3.log(se3.exp(jnp.asarray(xi))))
        np.testing.assert_allclose(back, xi, atol=1e-9)


def test_log_near_pi_rotation():
    with jax.enable_x64(True):
        axis = np.array([0.3, -0.5, 0.81])
        axis /= np.linalg.norm(axis)
        xi = np.concatenate([axis * (np.pi - 1e-6), [0.1, 0.2, 0.3]])
        t = se3.exp(jnp.asarray(xi))
        back = np.asarray(se3.log(t))
        np.testing.assert_allclose(np.asarray(se3.exp(jnp.asarray(back))), np.asarray(t), atol=1e-8)


def test_exp_gradient_finite_at_zero_and_matches_finite_differences(rng):
    with jax.enable_x64(True):
        probe = jnp.asarray(rng.standard_normal((4, 4)))

        def f(xi):
            return jnp.sum(se3.exp(xi) * probe)

        for xi0 in [np.zeros(6), random_twists(rng, 1, 1e-5)[0], random_twists(rng, 1, 0.7)[0]]:
            g = np.asarray(jax.grad(f)(jnp.asarray(xi0)))
            assert np.all(np.isfinite(g))
            eps = 1e-6
            fd = np.array([(f(jnp.asarray(xi0 + eps * e)) - f(jnp.asarray(xi0 - eps * e))) / (2 * eps)
                           for e in np.eye(6)])
            np.testing.assert_allclose(g, fd, atol=1e-6)


def test_exp_gradient_at_zero_in_float32():
    g = jax.grad(lambda xi: jnp.sum(se3.exp(xi) ** 2))(jnp.zeros(6, jnp.float32))
    assert np.all(np.isfinite(np.asarray(g)))
    g_log = jax.grad(lambda t: jnp.sum(se3.log(t)))(jnp.eye(4, dtype=jnp.float32))
    assert np.all(np.isfinite(np.asarray(g_log)))


def test_log_gradient_matches_finite_differences(rng):
    with jax.enable_x64(True):
        probe = jnp.asarray(rng.standard_normal(6))
        for scale in [1e-6, 0.8]:
            xi0 = random_twists(rng, 1, scale)[0]

            def f(x):
                return jnp.dot(se3.log(se3.exp(x)), probe)

            g = np.asarray(jax.grad(f)(jnp.asarray(xi0)))
            # log(exp(x)) = x, so the gradient is the probe itself
            np.testing.assert_allclose(g, np.asarray(probe), atol=1e-6)


def test_inverse_and_compose(rng):
    a = se3.exp(jnp.asarray(random_twists(rng, 8), jnp.float32))
    b = se3.exp(jnp.asarray(random_twists(rng, 8), jnp.float32))
    np.testing.assert_allclose(se3.compose(a, se3.inverse(a)), np.broadcast_to(np.eye(4), (8, 4, 4)), atol=1e-5)
    np.testing.assert_allclose(se3.inverse(se3.compose(a, b)), se3.compose(se3.inverse(b), se3.inverse(a)),
                               atol=1e-5)
    p = rng.standard_normal((8, 3)).astype(np.float32)
    np.testing.assert_allclose(se3.apply(se3.compose(a, b), p), se3.apply(a, se3.apply(b, p)), atol=1e-5)


def test_integrate_equals_python_loop(rng):
    twists = jnp.asarray(random_twists(rng, 7 * 5, 0.3).reshape(7, 5, 6), jnp.float32)
    init = se3.exp(jnp.asarray(random_twists(rng, 5), jnp.float32))
    out = se3.integrate(twists, init)
    assert out.shape == (7, 5, 4, 4)
    cur = np.asarray(init)
    for t in range(7):
        cur = np.asarray(se3.exp(twists[t])) @ cur
        np.testing.assert_allclose(out[t], cur, atol=1e-5)


def test_integrate_jaxpr_contains_scan():
    jaxpr = jax.make_jaxpr(se3.integrate)(jnp.zeros((4, 3, 6)), se3.identity((3,)))
    assert any(eqn.primitive.name == "scan" for eqn in jaxpr.jaxpr.eqns)


def test_integrate_gradient_is_finite_at_rest():
    def loss(tw):
        return jnp.sum(se3.integrate(tw, se3.identity((2,)))[:, :, :3, 3] ** 2 + 0.0 * tw.sum())

    g = jax.grad(lambda tw: jnp.sum(se3.integrate(tw, se3.identity((2,)))))(jnp.zeros((5, 2, 6)))
    assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g) != 0)
    assert np.isfinite(float(loss(jnp.zeros((5, 2, 6)))))


def test_integrate_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(T, M, 6\)"):
        se3.integrate(jnp.zeros((4, 6)), se3.identity((4,)))
    with pytest.raises(ValueError, match="init must have shape"):
        se3.integrate(jnp.zeros((4, 3, 6)), se3.identity((2,)))
