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


def test_silhouette_fits_the_girth_the_keypoints_cannot_see():
    from avatar_jax.body import lbs, phenotype
    from avatar_jax.gaussians import init
    from avatar_jax.personalize import photometric
    from avatar_jax.render import render

    tpl = load_template()
    w, h = 200, 300
    cam = body_fit.photo_camera(w, h, 30.0)
    root = se3.from_rotation_translation(se3.exp_so3(jnp.array([0.0, 0.0, np.pi])), jnp.array([0.0, 0.25, 4.2]))
    truth = jnp.array([0.5, 0.5, 0.5, 0.95, 0.5, 0.5])  # a heavy body: its keypoints look like anyone's
    pose = jnp.zeros((tpl.num_joints, 3))
    uv, _ = cam.project(body_fit.posed_keypoints(tpl, truth, pose, root))
    verts, joints = phenotype.shaped_rest(tpl, truth)
    cloud = init.init_on_template(tpl, 6000, vertices=np.asarray(verts), seed=0)
    _, sk = lbs.forward_kinematics(tpl, joints, pose, root)
    means, quats = photometric.pose_cloud(cloud, sk)
    args = cloud.render_args()
    args.update(means=means, quats=quats)
    mask = (np.asarray(render(camera=cam, background=(0.0, 0.0, 0.0), **args).alpha) > 0.5).astype(np.float32)
    conf = np.ones(kp.NUM_KEYPOINTS, np.float32)
    plain = body_fit.fit_body(tpl, np.asarray(uv), conf, w, h, steps=120, silhouette_vertices=1500)
    shaped = body_fit.fit_body(tpl, np.asarray(uv), conf, w, h, steps=120, mask=mask, silhouette_vertices=1500)
    print("weight: keypoints only", plain.phenotype[3], "with silhouette", shaped.phenotype[3],
          "IoU", plain.silhouette_iou, shaped.silhouette_iou)
    assert np.isnan(plain.silhouette_iou)
    assert shaped.error_fraction < 0.01  # the keypoints still fit
    assert abs(shaped.phenotype[3] - 0.95) < 0.15
    assert abs(shaped.phenotype[3] - 0.95) < 0.5 * abs(plain.phenotype[3] - 0.95)
    assert shaped.silhouette_iou > 0.8
