"""Body fit on synthetic keypoints, SSIM, unseen-colour filling."""

import jax.numpy as jnp
import numpy as np

from avatar_jax.body import keypoints as kp
from avatar_jax.body.template import load_template
from avatar_jax.gaussians import init
from avatar_jax.geometry import se3
from avatar_jax.personalize import body_fit, photometric


def test_body_fit_recovers_a_synthetic_view():
    tpl = load_template()
    cam = body_fit.photo_camera(400, 600, 30.0)
    pose = np.zeros((tpl.num_joints, 3), np.float32)
    pose[tpl.joint("lowerarm01.L")] = [0.0, 0.0, 0.6]
    root = se3.from_rotation_translation(se3.exp_so3(jnp.array([0.0, 0.25, np.pi])), jnp.array([0.1, 0.3, 4.0]))
    pheno = jnp.array([0.3, 0.6, 0.5, 0.5, 0.7, 0.5])
    uv, _ = cam.project(body_fit.posed_keypoints(tpl, pheno, jnp.asarray(pose), root))
    conf = np.ones(kp.NUM_KEYPOINTS, np.float32)
    fit = body_fit.fit_body(tpl, np.asarray(uv), conf, 400, 600, steps=240)
    assert fit.error_fraction < 0.01, fit.error_fraction
    # Depth and root height trade off against body size (phenotype) in one view: check the range only.
    assert 3.0 < fit.root[2, 3] < 5.0
    assert fit.errors[kp.LEFT_HAND].mean() < 6.0  # pixels: the bent elbow was found


def test_ssim_is_one_for_identical_images_and_lower_otherwise(rng):
    a = jnp.asarray(rng.uniform(size=(32, 32, 3)), jnp.float32)
    assert abs(float(photometric.ssim(a, a)) - 1.0) < 1e-5
    assert float(photometric.ssim(a, a * 0.5)) < 0.9


def test_unseen_gaussians_take_their_mirror_colour():
    tpl = load_template()
    cloud = init.init_on_template(tpl, 4000, seed=1)
    means = np.asarray(cloud.means)
    seen = means[:, 0] > 0  # the person's right half is "seen"
    dc = np.zeros((cloud.num, 3), np.float32)
    dc[seen] = np.where(means[seen, 1:2] > 0.5, 1.0, -1.0)  # upper body bright, lower dark
    filled = photometric.fill_unseen(cloud.replace(sh=cloud.sh.at[:, 0].set(jnp.asarray(dc))), seen)
    out = np.asarray(filled.sh[:, 0, 0])
    left = ~seen & (np.abs(means[:, 1] - 0.5) > 0.05)
    agree = np.sign(out[left]) == np.where(means[left, 1] > 0.5, 1.0, -1.0)
    assert agree.mean() > 0.95
