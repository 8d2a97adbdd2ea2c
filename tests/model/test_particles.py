"""Particle placement by region (lips apart, eyelids, hands dense) and the body-template skinning path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.config import load_config
from avatar_jax.data import rig as rig_lib
from avatar_jax.data import synthetic
from avatar_jax.model import particles
from avatar_jax.model.avatar import AudioDrivenAvatar, forward
from avatar_jax.model.body_skinning import joint_transforms
from avatar_jax.model.canonical import PART_FACE, PART_HANDS, synthetic_avatar

COUNTS = dict(body=6, face=8, upper_lip=8, lower_lip=8, eyelids=6, hands=12)


@pytest.fixture(scope="module")
def rigged():
    r = rig_lib.build_rig(synthetic.figure_from_avatar("synthetic", 1500, seed=0), seed=0)
    gaussian, p_region = particles.place_particles(r.figure.means, r.region, COUNTS)
    rest = r.figure.means[gaussian]
    index, weight = particles.bind_within_regions(r.figure.means, r.region, rest, p_region, 4)
    return r, gaussian, p_region, index, weight


def test_counts_per_region_and_density_where_the_paper_puts_it(rigged):
    r, gaussian, p_region, _, _ = rigged
    names = particles.REGIONS
    got = {names[k]: int((p_region == k).sum()) for k in np.unique(p_region)}
    assert got == COUNTS
    # spacing (median distance to the nearest particle of the same region): lips, lids and hands dense
    rest = r.figure.means[gaussian]
    spacing = {}
    for k, n in enumerate(names):
        pts = rest[p_region == k]
        d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(len(pts)) * 1e9
        spacing[n] = float(np.median(d.min(1)))
    for dense in ("upper_lip", "lower_lip", "eyelids"):
        assert spacing[dense] < spacing["body"] / 5, spacing
    assert spacing["hands"] < spacing["body"] / 2, spacing
    assert np.all(r.region[gaussian] == p_region)  # every particle sits on a Gaussian of its region


def test_upper_and_lower_lip_bind_to_separate_particles(rigged):
    r, _, p_region, index, weight = rigged
    up, low = particles.REGIONS.index("upper_lip"), particles.REGIONS.index("lower_lip")
    bound = p_region[index]  # (N, k) region of each bound particle
    for mine, other in ((up, low), (low, up)):
        rows = r.region == mine
        assert rows.sum() > 20
        assert float((weight[rows] * (bound[rows] == other)).sum()) == 0.0
    np.testing.assert_allclose(weight.sum(1), 1.0, atol=1e-5)
    # plain nearest-particle binding mixes them (what the region binding fixes)
    from avatar_jax.model.canonical import bind_to_particles

    i2, w2 = bind_to_particles(r.figure.means, r.figure.means[rigged[1]], 4)
    rows = r.region == up
    assert float((w2[rows] * (p_region[i2[rows]] == low)).sum()) > 0.5


def test_teacher_pose_as_particle_state_reproduces_the_posed_particles(rigged):
    r, gaussian, _, _, _ = rigged
    from avatar_jax.data.motion import Controls

    t = 3
    c = Controls(jaw=np.array([0, 1, 0.5], np.float32), round=np.zeros(t, np.float32),
                 blink=np.array([0, 0, 1], np.float32), nod=np.array([0, 0.1, -0.05], np.float32),
                 yaw=np.array([0, 0.03, 0], np.float32), beat=np.array([[0, 0], [0.3, 0], [0, 0.2]], np.float32))
    bones = rig_lib.bone_transforms(r, c)
    rest = jnp.asarray(r.figure.means[gaussian])
    posed, _ = rig_lib.pose(r, bones)
    target = np.asarray(posed)[:, gaussian]
    local = rig_lib.particle_state(r, bones, gaussian, rest, body_template=False)
    # local transforms pivot at the rest point: the particle lands at rest + translation
    np.testing.assert_allclose(np.asarray(rest)[None] + np.asarray(local[..., :3, 3]), target, atol=1e-5)
    # with the template: template LBS applied after the residual lands there too
    res = rig_lib.particle_state(r, bones, gaussian, rest, body_template=True)
    pivots, parents, _, tw = rig_lib.template(r)
    body = np.einsum("mj,tjab->tmab", tw[gaussian], np.asarray(bones)[:, list(rig_lib.TEMPLATE_BONES)])
    moved = np.asarray(rest)[None] + np.asarray(res[..., :3, 3])
    landed = np.einsum("tmab,tmb->tma", body[..., :3, :3], moved) + body[..., :3, 3]
    np.testing.assert_allclose(landed, target, atol=1e-5)
    # the jaw is a template joint (frame 1: jaw open, no blink), the lids are left to the particles (frame 2)
    assert np.abs(np.asarray(res[1, :, :3, 3])).max() < 1e-5
    assert np.abs(np.asarray(res[2, :, :3, 3])).max() > 1e-3


def test_body_skinning_path_alone_moves_face_and_hands_rigidly():
    avatar = synthetic_avatar(300, 16, seed=2)
    c = load_config("tiny")
    with c.unlocked():
        c.model.num_particles, c.model.d_model, c.model.num_heads = 16, 16, 2
        c.model.use_particle_deformer, c.model.use_gaussian_head = False, False
    model = AudioDrivenAvatar(c.model, nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    run = jax.jit(forward, static_argnums=0)
    out0, _ = run(graphdef, state, avatar, jnp.zeros((3, 16)))
    np.testing.assert_allclose(out0.means, np.broadcast_to(avatar.means, out0.means.shape), atol=1e-6)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    state = jax.tree.unflatten(treedef, [x + 0.2 * jax.random.normal(k, x.shape)
                                        for x, k in zip(leaves, keys, strict=True)])
    out, _ = run(graphdef, state, avatar, jax.random.normal(jax.random.key(1), (3, 16)))
    means, rest, part = np.asarray(out.means), np.asarray(avatar.means), np.asarray(avatar.part)
    for sel in (part == PART_FACE, (part == PART_HANDS) & (rest[:, 0] < 0)):
        moved = np.linalg.norm(means[:, sel] - rest[sel], axis=-1).max()
        assert moved > 1e-3
        d_rest = np.linalg.norm(rest[sel][:, None] - rest[sel][None], axis=-1)
        d_pose = np.linalg.norm(means[:, sel][:, :, None] - means[:, sel][:, None], axis=-1)
        np.testing.assert_allclose(d_pose, np.broadcast_to(d_rest, d_pose.shape), atol=1e-5)  # rigid per joint


def test_forward_kinematics_children_follow_their_parent():
    pivots = jnp.array([[0.0, 0, 0], [0.0, 1, 0]])
    rot = jnp.array([[[0.0, 0, np.pi / 2], [0, 0, 0]]])  # root turns 90 deg about z, child still
    world = joint_transforms(rot, pivots, jnp.array([-1, 0]))
    tip = world[0, 1] @ jnp.array([0.0, 2, 0, 1])  # a point above the child pivot
    np.testing.assert_allclose(tip[:3], [-2.0, 0, 0], atol=1e-6)
