"""Training losses on known cases: zero where they must be, the expected value where it is known, finite gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.config import load_config
from avatar_jax.errors import ConfigError, InputError
from avatar_jax.eval.ssim import ssim_map
from avatar_jax.geometry import camera as cam_lib
from avatar_jax.geometry import se3
from avatar_jax.model import landmarks as lm
from avatar_jax.model.canonical import synthetic_avatar
from avatar_jax.train import losses


@pytest.fixture(scope="module")
def clip():
    """Two frames 24x32 of smooth random colour, a mask covering the left half."""
    rng = np.random.default_rng(1)
    frames = rng.uniform(0.2, 0.8, (2, 24, 32, 3)).astype(np.float32)
    mask = np.zeros((2, 24, 32), np.float32)
    mask[:, :, :16] = 1.0
    return jnp.asarray(frames), jnp.asarray(mask)


def test_image_loss_zero_for_identical_frames(clip):
    frames, mask = clip
    terms = losses.image_terms(frames, frames, mask)
    assert abs(float(terms["image"])) < 1e-6
    assert set(terms) == {"image"}  # no encoder configured -> no perceptual term


def test_image_loss_constant_shift_gives_that_l1_inside_and_background_weight_outside(clip):
    frames, mask = clip
    shift = 0.05
    inside = frames + shift * mask[..., None]  # only the person changes
    t = losses.image_terms(inside, frames, mask, dssim_weight=0.0, background_weight=0.1)
    np.testing.assert_allclose(float(t["image"]), shift, rtol=1e-5)
    outside = frames + shift * (1.0 - mask[..., None])  # only the background changes
    t = losses.image_terms(outside, frames, mask, dssim_weight=0.0, background_weight=0.1)
    np.testing.assert_allclose(float(t["image"]), 0.1 * shift, rtol=1e-5)
    # the D-SSIM mix, per pixel: (1 - l) L1 + l (1 - SSIM map), averaged (mask everywhere)
    noisy = frames + 0.05 * jnp.asarray(np.random.default_rng(2).standard_normal(frames.shape), jnp.float32)
    full = jnp.ones_like(mask)
    mixed = losses.image_terms(noisy, frames, full, dssim_weight=0.2)["image"]
    l1 = float(jnp.mean(jnp.abs(noisy - frames)))
    dssim = 1.0 - float(jnp.mean(ssim_map(noisy, frames)))
    np.testing.assert_allclose(float(mixed), 0.8 * l1 + 0.2 * dssim, rtol=1e-5)
    assert dssim > 0.02


def test_perceptual_slot_uses_the_given_encoder_on_mask_composited_images(clip):
    frames, mask = clip
    encoder = lambda x: jnp.mean(x, axis=(1, 2))  # (B,H,W,3) -> (B,3): a fixed "encoder"
    background_only = frames + 0.3 * (1.0 - mask[..., None])
    t = losses.image_terms(background_only, frames, mask, perceptual=encoder)
    assert abs(float(t["perceptual"])) < 1e-10  # both composited on grey: the background is invisible
    person = frames + 0.2 * mask[..., None]
    t = losses.image_terms(person, frames, mask, perceptual=encoder)
    np.testing.assert_allclose(float(t["perceptual"]), (0.2 * 0.5) ** 2, rtol=1e-4)  # half the image is person


def test_image_gradients_are_finite(clip):
    frames, mask = clip
    g = jax.jit(jax.grad(lambda r: losses.image_terms(r, frames, mask)["image"]))(frames + 0.01)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0


@pytest.fixture(scope="module")
def scene():
    cam = cam_lib.look_at((0.0, 0.0, -2.0), (0.0, 0.0, 0.0), width=64, height=48, fov_y_deg=40.0)
    rng = np.random.default_rng(0)
    points = jnp.asarray(rng.uniform(-0.3, 0.3, (3, 553, 3)), jnp.float32)  # (T, L, 3)
    uv, _ = cam.project(points.reshape(-1, 3))
    return cam, points, uv.reshape(3, 553, 2)


@pytest.mark.parametrize("kind", ["geman_mcclure", "charbonnier"])
def test_keypoint_offset_of_d_pixels_gives_rho_of_d(scene, kind):
    cam, points, uv = scene
    group = jnp.asarray(losses.template_keypoint_groups())
    conf = jnp.ones(uv.shape[:2])
    d = 3.0  # pixels, along a diagonal
    target = uv + d / np.sqrt(2.0)
    t = losses.keypoint_terms(points, cam, target, conf, group, rho=kind, scale=0.02)
    expected = float(losses.robust_rho(jnp.asarray(d / 48.0), 0.02, kind))
    for name in ("kpt_body", "kpt_face", "kpt_hands"):
        np.testing.assert_allclose(float(t[name]), expected, rtol=1e-3)
    if kind == "geman_mcclure":
        np.testing.assert_allclose(expected, (d / 48) ** 2 / ((d / 48) ** 2 + 0.02**2), rtol=1e-6)
    total = losses.keypoint_loss(t, face=1.0, hands=2.0, body=0.5)
    np.testing.assert_allclose(float(total), 3.5 * expected, rtol=1e-3)
    exact = losses.keypoint_terms(points, cam, uv, conf, group, rho=kind)
    assert all(float(v) < 1e-6 for v in exact.values())


def test_keypoints_confidence_weighting_and_missing_hands(scene):
    cam, points, uv = scene
    group = jnp.asarray(losses.template_keypoint_groups())
    conf = np.ones(uv.shape[:2], np.float32)
    conf[:, 511:] = 0.0  # no hands detected
    target = np.asarray(uv).copy()
    target[:, 511:] += 40.0  # garbage where confidence is 0
    target[:, 33, 0] += 2.0  # one face point off by 2 px (x)
    t = losses.keypoint_terms(points, cam, jnp.asarray(target), jnp.asarray(conf), group)
    assert float(t["kpt_hands"]) == 0.0
    assert float(t["kpt_body"]) < 1e-6
    r = 2.0 / 48
    np.testing.assert_allclose(float(t["kpt_face"]), (r**2 / (r**2 + 0.02**2)) / 478, rtol=1e-3)


def test_keypoints_through_the_landmark_binding_have_finite_gradients(scene):
    cam, _, _ = scene
    avatar = synthetic_avatar(600, 16)
    means = np.asarray(avatar.means)
    part = np.asarray(avatar.part)
    idx = np.arange(0, 600, 10)
    binding = lm.build_landmark_binding(means, part, means[idx], part[idx], k=4)
    frames = jnp.stack([avatar.means, avatar.means + 0.01])  # (T, N, 3)
    uv, _ = cam.project(lm.landmarks(frames, binding).reshape(-1, 3))
    target = uv.reshape(2, len(idx), 2) + 1.5
    group = jnp.asarray(np.asarray(binding.part))  # any (L,) labels in {0,1,2}

    def loss(m):
        pts = lm.landmarks(m, binding)
        return losses.keypoint_loss(losses.keypoint_terms(pts, cam, target, jnp.ones(target.shape[:2]), group))

    g = jax.jit(jax.grad(loss))(frames)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0
    # exactly on target: gradients stay finite at the zero residual
    g0 = jax.jit(jax.grad(lambda m: losses.keypoint_loss(losses.keypoint_terms(
        lm.landmarks(m, binding), cam, uv.reshape(2, len(idx), 2), jnp.ones(target.shape[:2]), group))))(frames)
    assert np.all(np.isfinite(np.asarray(g0)))


def _rigid(t):
    """A rigid motion that changes with the frame index t."""
    xi = jnp.array([0.1 * t, -0.2 * t, 0.05, 0.03 * t, 0.0, -0.02], jnp.float32)
    return se3.exp(xi)


def test_arap_zero_for_rigid_motion_positive_for_non_rigid():
    rng = np.random.default_rng(3)
    rest = rng.uniform(-0.2, 0.2, (20, 3)).astype(np.float32)
    nb = jnp.asarray(losses.arap_neighbours(rest, 4))
    rest = jnp.asarray(rest)
    arap = jax.jit(losses.arap_loss)
    rigid = jnp.stack([jnp.broadcast_to(_rigid(t), (20, 4, 4)) for t in range(3)])  # (T, M, 4, 4)
    assert float(arap(rigid, rest, nb)) < 1e-10
    # stretch: every particle translated by 10% of its position -> strain 0.1 on every edge
    stretch = se3.from_rotation_translation(jnp.broadcast_to(jnp.eye(3), (20, 3, 3)), 0.1 * rest)
    np.testing.assert_allclose(float(arap(stretch[None], rest, nb)), 0.01, rtol=1e-4)
    # each particle rotating alone about its own position (translations consistent, rotations not)
    spin = jax.vmap(lambda p, w: se3.from_rotation_translation(se3.exp_so3(w), p - se3.exp_so3(w) @ p))(
        rest, jnp.asarray(rng.normal(0, 0.2, (20, 3)), jnp.float32))
    assert float(arap(spin, rest, nb)) > 1e-3
    g = jax.jit(jax.grad(lambda tr: losses.arap_loss(tr, rest, nb)))(spin)
    assert np.all(np.isfinite(np.asarray(g)))


def test_arap_neighbours_are_the_nearest_others():
    rest = np.array([[0, 0, 0], [1, 0, 0], [3, 0, 0], [10, 0, 0]], np.float32)
    np.testing.assert_array_equal(losses.arap_neighbours(rest, 2), [[1, 2], [0, 2], [1, 0], [2, 1]])
    with pytest.raises(InputError, match="k"):
        losses.arap_neighbours(rest, 4)


def test_temporal_zero_for_constant_velocity_positive_for_jitter():
    m = 5
    xi = jnp.asarray(np.random.default_rng(4).normal(0, 0.05, (m, 6)), jnp.float32)  # constant twist per particle
    transforms = jax.jit(se3.integrate)(jnp.broadcast_to(xi, (6, m, 6)), se3.identity((m,)))  # (T, M, 4, 4)
    means = jnp.asarray(np.random.default_rng(5).normal(size=(1, 7, 3)), jnp.float32)
    velocity = jnp.asarray([0.01, -0.02, 0.005], jnp.float32)
    moving = means + jnp.arange(6, dtype=jnp.float32)[:, None, None] * velocity  # (T, N, 3)
    terms = jax.jit(losses.temporal_terms)
    t = terms(transforms, moving)
    assert float(t["twist_accel"]) < 1e-8 and float(t["means_accel"]) < 1e-10
    jitter = moving.at[3].add(0.01)
    shaken = transforms.at[3].set(transforms[3] @ se3.exp(jnp.array([0.0, 0.0, 0.1, 0.0, 0.0, 0.0])))
    t = terms(shaken, jitter)
    # means: the second differences around frame 3 are +0.01, -0.02, +0.01 on every coordinate of 7 points
    np.testing.assert_allclose(float(t["means_accel"]), 3 * (0.01**2 + 0.02**2 + 0.01**2) / 4, rtol=1e-3)
    assert float(t["twist_accel"]) > 1e-3
    g = jax.jit(jax.grad(lambda tr, mm: losses.temporal_loss(losses.temporal_terms(tr, mm)), argnums=(0, 1)))(
        se3.identity((6, m)), moving)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in g)
    short = losses.temporal_terms(transforms[:2], moving[:2])
    assert float(short["twist_accel"]) == 0.0 and float(short["means_accel"]) == 0.0


def test_vsd_is_zero_without_a_teacher_and_passes_the_teacher_gradient_through(clip):
    frames, _ = clip
    assert float(losses.vsd_term(frames)) == 0.0
    assert float(jnp.abs(jax.grad(losses.vsd_term)(frames)).sum()) == 0.0
    g_teacher = jnp.asarray(np.random.default_rng(6).normal(size=frames.shape), jnp.float32)
    g = jax.grad(lambda r: losses.vsd_term(r, lambda x: g_teacher * (1.0 + 0.0 * x)))(frames)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_teacher) / frames.size, rtol=1e-6)


def test_total_loss_weighs_terms_from_the_config():
    cfg = load_config("tiny").loss
    terms = {"image": jnp.float32(0.2), "keypoints": jnp.float32(0.5), "arap": jnp.float32(0.01),
             "temporal": jnp.float32(0.003), "vsd": jnp.float32(0.0)}
    total, weighted = losses.total_loss(terms, cfg)
    expect = cfg.image * 0.2 + cfg.keypoints * 0.5 + cfg.arap * 0.01 + cfg.temporal * 0.003
    np.testing.assert_allclose(float(total), expect, rtol=1e-6)
    assert set(weighted) == set(losses.TERMS) and float(weighted["perceptual"]) == 0.0
    with pytest.raises(ConfigError, match="unknown loss terms"):
        losses.total_loss({**terms, "lpips": jnp.float32(1.0)}, cfg)
    cfg.perceptual = 0.5
    with pytest.raises(ConfigError, match="perceptual"):
        losses.total_loss(terms, cfg)


def test_total_loss_jits_and_differentiates(clip):
    frames, mask = clip
    cfg = load_config("tiny").loss
    cfg.keypoints = cfg.arap = cfg.temporal = 0.0  # only the image term is computed here

    @jax.jit
    def f(r):
        return losses.total_loss(losses.image_terms(r, frames, mask), cfg)[0]

    g = jax.grad(f)(frames * 0.9)
    assert np.isfinite(float(f(frames * 0.9))) and np.all(np.isfinite(np.asarray(g)))


def test_batched_terms_equal_the_mean_of_per_sample_terms(clip):
    frames, mask = clip
    rng = np.random.default_rng(7)
    other = jnp.asarray(rng.uniform(0, 1, frames.shape), jnp.float32)
    both = losses.image_terms(jnp.stack([frames, other]), jnp.stack([frames, frames]), jnp.stack([mask, mask]))
    single = losses.image_terms(other, frames, mask)
    np.testing.assert_allclose(float(both["image"]), float(single["image"]) / 2, rtol=1e-5)
    bf16 = losses.image_terms(other.astype(jnp.bfloat16), frames, mask)["image"]
    assert bf16.dtype == jnp.float32 and abs(float(bf16) - float(single["image"])) < 1e-2
    means = jnp.asarray(rng.normal(size=(2, 5, 4, 3)), jnp.float32)  # (B, T, N, 3)
    transforms = se3.identity((2, 5, 3))
    batched = jax.jit(losses.temporal_terms)(transforms, means)
    per = [jax.jit(losses.temporal_terms)(transforms[b], means[b])["means_accel"] for b in range(2)]
    np.testing.assert_allclose(float(batched["means_accel"]), float(np.mean(per)), rtol=1e-5)
