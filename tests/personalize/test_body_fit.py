"""Body fit on synthetic keypoints."""

import jax.numpy as jnp
import numpy as np

from avatar_jax.body import keypoints as kp
from avatar_jax.body.template import load_template
from avatar_jax.geometry import se3
from avatar_jax.personalize import body_fit


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
