"""Landmark binding: reproduces rest landmarks, follows rigid motion exactly, respects parts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.body.template import load_template
from avatar_jax.errors import InputError
from avatar_jax.geometry import se3
from avatar_jax.model import landmarks as lm
from avatar_jax.model.canonical import PART_BODY, PART_FACE, PART_HANDS, synthetic_avatar


@pytest.fixture(scope="module")
def avatar():
    return synthetic_avatar(3000, 32)


def test_binding_reproduces_rest_landmarks_and_stays_in_part(avatar):
    means, part = np.asarray(avatar.means), np.asarray(avatar.part)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(means), 60, replace=False)
    rest = means[idx] + 0.005 * rng.standard_normal((60, 3))
    b = lm.build_landmark_binding(means, part, rest, part[idx], k=4)
    assert b.gaussian_index.shape == (60, 4) and b.weight.shape == (60, 4)
    np.testing.assert_allclose(np.asarray(b.weight).sum(1), 1.0, atol=1e-5)
    assert np.all(part[np.asarray(b.gaussian_index)] == part[idx][:, None])
    err = np.linalg.norm(np.asarray(lm.landmarks(avatar.means, b)) - rest, axis=1)
    softmin_only = lm.build_landmark_binding(means, part, rest, part[idx], k=4, regularizer=1e6)
    err_softmin = np.linalg.norm(np.asarray(lm.landmarks(avatar.means, softmin_only)) - rest, axis=1)
    assert err.mean() < 0.5 * err_softmin.mean() and err.mean() < 3e-3  # metres
    exact = lm.build_landmark_binding(means, part, rest, part[idx], k=4, regularizer=0.0)
    np.testing.assert_allclose(np.asarray(lm.landmarks(avatar.means, exact)), rest, atol=1e-4)


def test_landmarks_follow_a_rigid_motion_of_the_gaussians(avatar):
    means, part = np.asarray(avatar.means), np.asarray(avatar.part)
    b = lm.build_landmark_binding(means, part, means[:40] + 0.002, part[:40], k=4)
    moves = se3.exp(jnp.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.3, -0.2, 0.1, 0.05, 0.0, -0.1]]))  # (T,4,4)
    frames = jax.vmap(lambda m: se3.apply(m, avatar.means))(moves)  # (T, N, 3)
    out = lm.landmarks(frames, b)
    assert out.shape == (2, 40, 3)
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(se3.apply(moves[1], out[0])), atol=1e-5)


def test_template_landmarks_and_parts():
    parts = lm.template_landmark_parts()
    assert parts.shape == (553,)
    assert parts[0] == PART_FACE and parts[11] == PART_BODY and parts[15] == PART_HANDS  # nose, shoulder, wrist
    assert np.all(parts[33:511] == PART_FACE) and np.all(parts[511:] == PART_HANDS)
    rest = lm.template_rest_landmarks(load_template())
    assert rest.shape == (553, 3) and np.all(np.isfinite(rest))
    # the nose sits above the shoulders and the left shoulder on the +x side (the subject faces -z)
    assert rest[0, 1] > rest[11, 1] and rest[11, 0] * rest[12, 0] < 0


def test_binding_bad_input(avatar):
    means, part = np.asarray(avatar.means), np.asarray(avatar.part)
    with pytest.raises(InputError, match="landmarks"):
        lm.build_landmark_binding(means, part, np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(InputError, match="k must"):
        lm.build_landmark_binding(means, part, np.zeros((5, 3)), np.zeros(5), k=0)
