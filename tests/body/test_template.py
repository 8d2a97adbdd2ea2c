"""Body template: archive contents, phenotype port, LBS round trip, keypoint correspondences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.body import keypoints as kp
from avatar_jax.body import lbs, parts, phenotype
from avatar_jax.body.template import load_template
from avatar_jax.errors import InputError


@pytest.fixture(scope="module")
def tpl():
    return load_template()


def test_archive_is_compact_and_complete(tpl):
    import os

    from avatar_jax.body.template import DEFAULT_PATH

    assert os.path.getsize(DEFAULT_PATH) < 6e6
    assert tpl.num_vertices == 13718 and tpl.faces.shape == (27420, 3)
    for name in ("jaw", "wrist.L", "finger2-3.R", "head", "eye.L"):
        tpl.joint(name)
    assert tpl.parents[tpl.joint("jaw")] == tpl.joint("head")
    assert len(tpl.expression_names) == 52 and "jawOpen" in tpl.expression_names
    counts = np.bincount(tpl.part_labels, minlength=len(parts.NAMES))
    assert counts[parts.HAND_L] == counts[parts.HAND_R] > 1000 and counts[parts.HEAD] > 2000
    assert tpl.keypoint_vertices.shape == (kp.NUM_KEYPOINTS, 12)
    np.testing.assert_allclose(tpl.keypoint_weights.sum(1), 1.0, atol=1e-5)


def test_phenotype_port_matches_anny(tpl):
    v, _ = jax.jit(phenotype.shaped_rest, static_argnums=0)(tpl, jnp.asarray(phenotype.DEFAULT_PHENOTYPE))
    err = np.linalg.norm(np.asarray(v) - tpl.reference_vertices, axis=1)
    assert err.max() < 2e-3, err.max()  # float16 basis, truncated to 48 directions
    v2, _ = phenotype.shaped_rest(tpl, jnp.asarray(tpl.reference_phenotype))
    err2 = np.linalg.norm(np.asarray(v2) - tpl.reference_phenotype_vertices, axis=1)
    assert np.sqrt(np.mean(err2**2)) < 1e-3 and err2.max() < 6e-3, (err2.max(), np.sqrt(np.mean(err2**2)))
    # Taller phenotype -> taller body.
    tall, _ = phenotype.shaped_rest(tpl, jnp.asarray([0.5, 0.7, 0.5, 0.5, 1.0, 0.5]))
    short, _ = phenotype.shaped_rest(tpl, jnp.asarray([0.5, 0.7, 0.5, 0.5, 0.0, 0.5]))
    assert float(jnp.ptp(tall[:, 1]) - jnp.ptp(short[:, 1])) > 0.1


def test_rest_pose_reproduces_template(tpl):
    v, joints = phenotype.shaped_rest(tpl, jnp.asarray(phenotype.DEFAULT_PHENOTYPE))
    frames, skinning = lbs.forward_kinematics(tpl, joints, jnp.zeros((tpl.num_joints, 3)))
    np.testing.assert_allclose(np.asarray(skinning), np.broadcast_to(np.eye(4), skinning.shape), atol=1e-5)
    posed = lbs.skin(tpl, v, skinning)
    np.testing.assert_allclose(np.asarray(posed), np.asarray(v), atol=1e-5)
    np.testing.assert_allclose(np.asarray(frames[:, :3, 3]), np.asarray(joints), atol=1e-5)


@pytest.mark.parametrize("joint", ["jaw", "lowerarm01.L", "finger2-2.R"])
def test_rotating_one_joint_moves_only_its_vertices(tpl, joint):
    v, joints = phenotype.shaped_rest(tpl, jnp.asarray(phenotype.DEFAULT_PHENOTYPE))
    j = tpl.joint(joint)
    pose = jnp.zeros((tpl.num_joints, 3)).at[j].set(jnp.array([0.4, 0.0, 0.2]))
    _, skinning = lbs.forward_kinematics(tpl, joints, pose)
    moved = np.linalg.norm(np.asarray(lbs.skin(tpl, v, skinning)) - np.asarray(v), axis=1) > 1e-5
    bound = tpl.dense_skin_weights()[:, tpl.descendants(j)].sum(1) > 1e-6
    assert moved.sum() > 20
    assert not np.any(moved & ~bound)  # nothing outside the joint's subtree moves
    assert moved[bound].mean() > 0.95  # and (nearly) everything bound to it does
    # Joints above it stay put.
    frames, _ = lbs.forward_kinematics(tpl, joints, pose)
    others = np.setdiff1d(np.arange(tpl.num_joints), tpl.descendants(j))
    np.testing.assert_allclose(np.asarray(frames[others, :3, 3]), np.asarray(joints)[others], atol=1e-5)


def test_root_transform_moves_everything_rigidly(tpl):
    v, joints = phenotype.shaped_rest(tpl, jnp.asarray(phenotype.DEFAULT_PHENOTYPE))
    from avatar_jax.geometry import se3

    root = se3.exp(jnp.array([0.1, 0.5, -0.2, 0.3, 0.0, 1.0]))
    _, skinning = lbs.forward_kinematics(tpl, joints, jnp.zeros((tpl.num_joints, 3)), root)
    posed = lbs.skin(tpl, v, skinning)
    np.testing.assert_allclose(np.asarray(posed), np.asarray(se3.apply(root, v)), atol=1e-5)


def test_expressions_move_the_face_only(tpl):
    v, _ = phenotype.shaped_rest(tpl, jnp.asarray(phenotype.DEFAULT_PHENOTYPE))
    e = jnp.zeros(len(tpl.expression_names)).at[tpl.expression_names.index("jawOpen")].set(1.0)
    moved = np.linalg.norm(np.asarray(phenotype.apply_expressions(tpl, v, e) - v), axis=1) > 1e-4
    assert moved.sum() > 100
    assert np.isin(tpl.part_labels[moved], parts.FACE_PARTS).mean() > 0.95


def test_keypoints_sit_where_mediapipe_says(tpl):
    pts = kp.regress(tpl.reference_vertices, tpl.keypoint_vertices, tpl.keypoint_weights)
    pose = dict(zip(kp.POSE_NAMES, pts[kp.POSE], strict=True))
    # Person faces -z, their left is world -x, y is up.
    assert pose["left_shoulder"][0] < -0.1 and pose["right_shoulder"][0] > 0.1
    assert pose["nose"][1] > pose["mouth_left"][1] > pose["left_shoulder"][1] > pose["left_hip"][1]
    assert pose["left_knee"][1] > pose["left_ankle"][1] > pose["left_foot_index"][1] - 0.05
    assert pose["nose"][2] < pose["left_ear"][2]
    face = pts[kp.FACE]
    head = tpl.reference_vertices[tpl.part_labels == parts.HEAD]
    assert np.all(face[:, 1] > head[:, 1].min()) and np.all(face[:, 1] < head[:, 1].max())
    # Hand chains run wrist -> tip, away from the wrist.
    for sl in (kp.LEFT_HAND, kp.RIGHT_HAND):
        hand = pts[sl]
        d = np.linalg.norm(hand - hand[0], axis=1)
        for tip in (4, 8, 12, 16, 20):
            assert d[tip] > d[tip - 1] > d[tip - 2]


def test_missing_or_bad_template_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="make body-template"):
        load_template(str(tmp_path / "nope.npz"))
    np.savez(tmp_path / "bad.npz", base_vertices=np.zeros((3, 3)))
    with pytest.raises(InputError, match="lacks"):
        load_template(str(tmp_path / "bad.npz"))
