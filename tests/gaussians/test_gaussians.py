"""Gaussian cloud: density on expressive regions, bindings, .ply and avatar file round trips."""

import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.body import lbs, parts, phenotype
from avatar_jax.body.template import load_template
from avatar_jax.errors import InputError
from avatar_jax.gaussians import avatar_file, init, ply
from avatar_jax.gaussians.cloud import check, dc_from_rgb, rgb_from_dc
from avatar_jax.geometry import quaternion


@pytest.fixture(scope="module")
def tpl():
    return load_template()


@pytest.fixture(scope="module")
def cloud(tpl):
    return init.init_on_template(tpl, 20000, sh_degree=1, seed=0)


def test_cloud_lies_on_template_and_is_dense_where_expressive(tpl, cloud):
    check(cloud)
    assert cloud.num == 20000 and cloud.sh_degree == 1
    tri = tpl.faces[np.asarray(cloud.face)]
    on_surface = np.einsum("nk,nkc->nc", np.asarray(cloud.bary), tpl.reference_vertices[tri])
    np.testing.assert_allclose(np.asarray(cloud.means), on_surface, atol=1e-5)
    # Gaussians per square metre: lips/eyelids (most expressive vertices) and hands >> torso.
    v, f = tpl.reference_vertices, tpl.faces
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    expr = init.expressiveness(tpl)[f].mean(1)
    count = np.bincount(np.asarray(cloud.face), minlength=len(f))
    lips = expr > 0.5
    body = (tpl.part_labels[f] == parts.BODY).all(1)
    hands = np.isin(tpl.part_labels[f], parts.HAND_PARTS).all(1)
    dens = lambda m: count[m].sum() / area[m].sum()  # noqa: E731
    assert dens(lips) > 20 * dens(body)
    assert dens(hands) > 3 * dens(body)
    # Discs lie in their triangle's plane: the local z axis is the triangle normal.
    normals = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    z_axis = np.asarray(quaternion.to_matrix(cloud.quats))[:, :, 2]
    assert np.abs(np.sum(z_axis * normals, axis=1)).min() > 0.999


def test_skin_binding_follows_the_surface(tpl, cloud):
    v, joints = phenotype.shaped_rest(tpl, jnp.asarray(tpl.reference_phenotype))
    j = tpl.joint("lowerarm01.R")
    pose = jnp.zeros((tpl.num_joints, 3)).at[j].set(jnp.array([0.0, 0.0, 0.8]))
    _, skinning = lbs.forward_kinematics(tpl, joints, pose)
    posed_v = lbs.skin(tpl, v, skinning)
    bary_pts = np.einsum("nk,nkc->nc", np.asarray(cloud.bary), np.asarray(v)[tpl.faces[np.asarray(cloud.face)]])
    moved, _ = lbs.skin_points(skinning, jnp.asarray(bary_pts), cloud.skin_joints, cloud.skin_weights)
    expected = np.einsum("nk,nkc->nc", np.asarray(cloud.bary), np.asarray(posed_v)[tpl.faces[np.asarray(cloud.face)]])
    # LBS is linear in the weights, so skinning the point == the point on the skinned triangle
    # (up to the top-8 truncation of the interpolated weights).
    assert np.abs(np.asarray(moved) - expected).max() < 2e-3


def test_ply_round_trip_is_lossless(tmp_path, cloud, rng):
    path = str(tmp_path / "a.ply")
    sh = rng.normal(size=np.shape(cloud.sh)).astype(np.float32)
    ply.write_ply(path, cloud.means, cloud.log_scales, cloud.quats, cloud.opacity_logits, sh)
    back = ply.read_ply(path)
    for name, ref in (("means", cloud.means), ("log_scales", cloud.log_scales), ("quats", cloud.quats),
                      ("opacity_logits", cloud.opacity_logits), ("sh", sh)):
        np.testing.assert_array_equal(back[name], np.asarray(ref), err_msg=name)
    with open(path, "rb") as f:
        header = f.read(2000).split(b"end_header")[0].decode()
    assert "property float f_rest_8" in header and "property float f_rest_9" not in header
    assert header.index("f_dc_2") < header.index("f_rest_0") < header.index("opacity") < header.index("rot_3")


def test_ply_rest_order_is_channel_major(tmp_path):
    sh = np.zeros((1, 4, 3), np.float32)
    sh[0, 1:, 0] = [1, 2, 3]  # red coefficients
    sh[0, 1:, 1] = [4, 5, 6]
    path = str(tmp_path / "one.ply")
    ply.write_ply(path, np.zeros((1, 3)), np.zeros((1, 3)), [[1, 0, 0, 0]], [0.0], sh)
    raw = open(path, "rb").read()
    body = np.frombuffer(raw[raw.index(b"end_header\n") + 11 :], "<f4")
    np.testing.assert_array_equal(body[9:18], [1, 2, 3, 4, 5, 6, 0, 0, 0])


def test_avatar_file_keeps_bindings(tmp_path, cloud):
    path = str(tmp_path / "avatar.npz")
    avatar_file.save_avatar(path, cloud, phenotype=np.full(6, 0.5, np.float32))
    back, extras = avatar_file.load_avatar(path)
    for name in ("means", "sh", "part", "face", "bary", "skin_joints", "skin_weights"):
        np.testing.assert_array_equal(np.asarray(getattr(back, name)), np.asarray(getattr(cloud, name)))
    np.testing.assert_array_equal(extras["phenotype"], np.full(6, 0.5))


def test_bad_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply")
    with pytest.raises(InputError, match="not a .ply"):
        ply.read_ply(str(bad))
    with pytest.raises(InputError, match="no such"):
        avatar_file.load_avatar(str(tmp_path / "none.npz"))


def test_sh_colour_conversion_round_trips():
    rgb = jnp.array([[0.1, 0.5, 0.9]])
    np.testing.assert_allclose(np.asarray(rgb_from_dc(dc_from_rgb(rgb))), np.asarray(rgb), atol=1e-6)
