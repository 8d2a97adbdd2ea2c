"""The pose-driven baseline: its 5-joint talking template (a jaw that moves only the lower face), and training
and prediction through the very train step and predict function the audio-driven model uses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.config import load_config
from avatar_jax.errors import ConfigError
from avatar_jax.geometry import look_at
from avatar_jax.model import pose_driven
from avatar_jax.model.body_skinning import blend_joints, joint_transforms
from avatar_jax.model.canonical import PART_FACE, synthetic_avatar
from avatar_jax.train import data, sharding, step
from avatar_jax.train import state as state_lib
from avatar_jax.train.optimizer import make_optimizer

B, T, SIZE = 2, 2, 32


def config(*extra):
    return load_config("tiny", ["model.kind=pose_driven", "model.num_particles=8", "model.d_model=16",
                                "model.num_heads=2", "audio.embedded_dim=16", "audio.embedded_width=16",
                                "audio.embedded_depth=1", f"train.batch_size={B}", f"train.seq_len={T}",
                                "train.warmup_steps=1", "train.learning_rate=3e-3", "mesh.data=1", "mesh.model=-1",
                                *extra])


def test_template_jaw_moves_the_lower_face_only():
    avatar = pose_driven.with_talking_template(synthetic_avatar(300, 8, seed=2))
    means, part = np.asarray(avatar.means), np.asarray(avatar.part)
    w = np.asarray(avatar.joint_weight)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    assert np.asarray(avatar.joint_parents).tolist() == [-1, 0, 1, 0, 0]  # the jaw hangs from the neck
    jaw = w[:, pose_driven.JAW] > 0.5
    face = part == PART_FACE
    assert jaw.sum() >= 3 and not (jaw & ~face).any()
    assert means[jaw, 1].max() < np.median(means[face, 1])  # below the middle of the face
    rot = np.zeros((1, 5, 3), np.float32)
    rot[0, pose_driven.JAW, 0] = 0.3  # open the jaw
    motion = blend_joints(joint_transforms(jnp.asarray(rot), avatar.joint_pivots, avatar.joint_parents),
                          avatar.joint_index, avatar.joint_weight)[0]
    moved = np.linalg.norm(np.asarray(motion[:, :3, :3] @ avatar.means[:, :, None])[..., 0]
                           + np.asarray(motion[:, :3, 3]) - means, axis=1)
    assert moved[jaw].min() > 1e-3 and moved[~face].max() < 1e-6  # body and hands stay


def test_unknown_kind_is_a_clear_error_and_the_template_is_fitted_when_absent():
    with pytest.raises(ConfigError, match="model.kind must be one of audio_driven, pose_driven"):
        state_lib.abstract_model(config("model.kind=pose"))
    from flax import nnx

    model = pose_driven.PoseDrivenAvatar(config().model, nnx.Rngs(0))
    bare = synthetic_avatar(100, 8, seed=0)  # its own 4-joint template: not the baseline's
    driving = jax.random.normal(jax.random.key(1), (3, 16))
    for layer in (model.pose_net.mlp.fc1, model.pose_net.mlp.fc2):  # non-zero output: a real pose
        layer.kernel.value = 0.5 * jax.random.normal(jax.random.key(2), layer.kernel.value.shape)
    fitted, _ = model(pose_driven.with_talking_template(bare), driving)
    inside, _ = model(bare, driving)
    np.testing.assert_allclose(np.asarray(inside.means), np.asarray(fitted.means), atol=1e-6)
    assert float(jnp.abs(inside.means - bare.means).max()) > 1e-4


@pytest.fixture(scope="module")
def trained():
    """Three train steps of the baseline on one fixed batch (random frames and keypoints: a loss to descend)."""
    c = config()
    avatar = synthetic_avatar(160, 8, seed=1)
    camera = look_at(np.array([0.0, 0.3, -2.6]), np.array([0.0, 0.3, 0.0]), width=SIZE, height=SIZE, fov_y_deg=40)
    rest = np.asarray(avatar.means)[np.random.default_rng(0).integers(0, avatar.num_gaussians, 553)]
    consts = step.make_constants(c, avatar, rest)
    rs = step.RenderSettings(SIZE, SIZE, step.render_capacity(avatar, camera, 4.0), (0.9, 0.9, 0.9), "xla")
    rng = np.random.default_rng(0)
    batch = data.Batch(
        audio=(0.1 * rng.standard_normal((B, T * 640))).astype(np.float32),
        frames=rng.integers(0, 256, (B, T, SIZE, SIZE, 3), dtype=np.uint8),
        masks=np.pad(np.full((B, T, 24, 16), 255, np.uint8), ((0, 0), (0, 0), (4, 4), (8, 8))),
        face=rng.uniform(0, SIZE, (B, T, 478, 2)).astype(np.float32), face_conf=np.ones((B, T, 478), np.float32),
        hands=rng.uniform(0, SIZE, (B, T, 2, 21, 2)).astype(np.float32),
        hands_conf=np.ones((B, T, 2, 21), np.float32),
        body=rng.uniform(0, SIZE, (B, T, 33, 2)).astype(np.float32), body_conf=np.ones((B, T, 33), np.float32),
        K=np.broadcast_to(np.asarray(camera.K), (B, 3, 3)),
        viewmat=np.broadcast_to(np.asarray(camera.viewmat), (B, 4, 4)))
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])
    optimizer = make_optimizer(c.train)
    graphdef, state = state_lib.create_state(c, mesh, optimizer)
    first = jax.device_get(state.params)
    sh = jax.tree.map(lambda x: x.sharding, state)
    csh, bsh = step.constant_shardings(mesh, consts), data.batch_shardings(mesh, batch)
    fn = step.make_train_step(graphdef, optimizer, rs, c.loss, state_shardings=sh, const_shardings=csh,
                              batch_shardings=bsh, mesh=mesh)
    consts = jax.device_put(consts, csh)
    history = []
    for _ in range(3):
        state, metrics = fn(state, consts, data.to_device(batch, bsh))
        history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return graphdef, first, state, consts, rs, batch, history


def test_baseline_trains_through_the_shared_step(trained):
    graphdef, first, state, consts, _, _, history = trained
    paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(first)[0]}
    assert any("pose_net" in p for p in paths) and any("driving" in p for p in paths)
    assert not any(k in p for p in paths for k in ("deformer", "head", "weight_decoder"))  # no particles, no head
    for m in history:
        assert m["ok"] == 1.0 and m["grad_norm"] > 0
        for term in ("image", "keypoints", "arap", "temporal"):
            assert np.isfinite(m[term]), term
    assert history[-1]["loss"] < history[0]["loss"]  # the same batch three times: Adam descends
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), first,
                         jax.device_get(state.params))
    assert max(jax.tree.leaves(moved)) > 0


def test_trained_baseline_predicts_moving_frames(trained):
    graphdef, _, state, consts, rs, batch, _ = trained
    out, rgb, _, overflow = step.predict_jit(graphdef, jax.device_get(state.params), consts,
                                             jnp.asarray(batch.audio[0]), jnp.asarray(batch.K[0]),
                                             jnp.asarray(batch.viewmat[0]), T, rs)
    assert rgb.shape == (T, SIZE, SIZE, 3) and not bool(overflow) and np.isfinite(np.asarray(rgb)).all()
    assert float(jnp.abs(out.means - consts.avatar.means).max()) > 0  # trained joints move the avatar
    np.testing.assert_array_equal(np.asarray(out.colors[0]), np.asarray(consts.avatar.colors))  # no appearance path
