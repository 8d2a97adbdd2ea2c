"""The jitted train step: same loss trajectory on 1 device and sharded meshes, the NaN guard, the optimiser."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.config import load_config
from avatar_jax.errors import ConfigError
from avatar_jax.geometry import look_at
from avatar_jax.model.canonical import synthetic_avatar
from avatar_jax.train import data, sharding, step
from avatar_jax.train import state as state_lib
from avatar_jax.train.optimizer import learning_rate_schedule, make_optimizer

B, T, SIZE = 8, 2, 32


def tiny_config(**train):
    c = load_config("tiny", ["model.num_particles=8", "model.d_model=16", "model.num_heads=2",
                             "audio.embedded_dim=16", "audio.embedded_width=16", "audio.embedded_depth=1",
                             f"train.batch_size={B}", f"train.seq_len={T}", "train.warmup_steps=1"]
                      + [f"train.{k}={v}" for k, v in train.items()])
    return c


def make_batch(seed: int, camera, avatar) -> data.Batch:
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal((B, T * 640))).astype(np.float32)
    frames = rng.integers(0, 256, (B, T, SIZE, SIZE, 3), dtype=np.uint8)
    masks = np.zeros((B, T, SIZE, SIZE), np.uint8)
    masks[:, :, 4:28, 8:24] = 255
    kp = {"face": (478, 2), "hands": (2, 21, 2), "body": (33, 2)}
    fields = {}
    for name, shape in kp.items():
        fields[name] = rng.uniform(0, SIZE, (B, T, *shape)).astype(np.float32)
        fields[name + "_conf"] = np.ones((B, T, *shape[:-1]), np.float32)
    return data.Batch(audio=audio, frames=frames, masks=masks, K=np.broadcast_to(np.asarray(camera.K), (B, 3, 3)),
                      viewmat=np.broadcast_to(np.asarray(camera.viewmat), (B, 4, 4)), **fields)


@pytest.fixture(scope="module")
def setup():
    avatar = synthetic_avatar(160, 8, seed=1)
    camera = look_at(np.array([0.0, 0.3, -2.6]), np.array([0.0, 0.3, 0.0]), width=SIZE, height=SIZE, fov_y_deg=40)
    rest = np.asarray(avatar.means)[np.random.default_rng(0).integers(0, avatar.num_gaussians, 553)]
    config = tiny_config()
    consts = step.make_constants(config, avatar, rest)
    rs = step.RenderSettings(SIZE, SIZE, step.render_capacity(avatar, camera, 4.0), (0.9, 0.9, 0.9), "xla")
    batches = [make_batch(s, camera, avatar) for s in range(3)]
    return config, consts, rs, batches


def run_steps(config, consts, rs, batches, mesh_shape, devices=None):
    mesh = sharding.make_mesh(mesh_shape, devices)
    optimizer = make_optimizer(config.train)
    graphdef, state = state_lib.create_state(config, mesh, optimizer)
    state_sh = jax.tree.map(lambda x: x.sharding, state)
    const_sh = step.constant_shardings(mesh, consts)
    batch_sh = data.batch_shardings(mesh, batches[0])
    fn = step.make_train_step(graphdef, optimizer, rs, config.loss, state_shardings=state_sh, const_shardings=const_sh,
                              batch_shardings=batch_sh, mesh=mesh)
    consts = jax.device_put(consts, const_sh)
    history = []
    for b in batches:
        state, metrics = fn(state, consts, data.to_device(b, batch_sh))
        history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return state, history, (fn, consts, batch_sh)


@pytest.fixture(scope="module")
def single(setup):
    config, consts, rs, batches = setup
    return run_steps(config, consts, rs, batches, {"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])


def test_steps_apply_and_report_every_term(single):
    _, history, _ = single
    for m in history:
        assert m["ok"] == 1.0 and m["bad_streak"] == 0
        for term in ("image", "keypoints", "arap", "temporal", "vsd", "kpt_face", "grad_norm"):
            assert np.isfinite(m[term]), term
        assert m["image"] > 0 and m["keypoints"] > 0 and m["grad_norm"] > 0
        assert m["vsd"] == 0.0 and m["overflow"] == 0.0  # the VSD slot is empty until the teacher lands
        weighted = m["image"] + m["keypoints"] + m["arap"] + m["temporal"] + m["vsd"] + m["perceptual"]
        np.testing.assert_allclose(m["loss"], weighted, rtol=1e-5)
    assert len({round(m["loss"], 7) for m in history}) == len(history)  # the batches and params differ


def test_same_seed_and_batches_give_bitwise_the_same_steps(setup, single):
    """A fixed seed reproduces a run exactly on one machine and mesh: a fresh state from the seed through the
    compiled step repeats every metric of every step bit for bit (XLA:CPU reductions do not depend on thread
    timing; a fresh compile in one process gives the same program, measured for loop.train in the README)."""
    config, consts, rs, batches = setup
    _, history, (fn, dev_consts, batch_sh) = single
    one = sharding.make_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])
    _, state = state_lib.create_state(config, one, make_optimizer(config.train))
    again = []
    for b in batches:
        state, m = fn(state, dev_consts, data.to_device(b, batch_sh))
        again.append({k: float(v) for k, v in jax.device_get(m).items()})
    assert again == history  # exact float equality, every term of every step


@pytest.mark.parametrize("mesh_shape", [{"data": 4, "fsdp": 1, "model": 2}, {"data": 1, "fsdp": 8, "model": 1}])
def test_sharded_loss_trajectory_equals_one_device(setup, single, mesh_shape):
    config, consts, rs, batches = setup
    state, history, _ = run_steps(config, consts, rs, batches, mesh_shape)
    ref_state, ref_history, _ = single
    np.testing.assert_allclose([m["loss"] for m in history], [m["loss"] for m in ref_history], rtol=1e-5, atol=1e-6)
    sharded = [x for x in jax.tree.leaves(state.params) if not x.sharding.is_fully_replicated]
    assert sharded, "some parameters must really be split over the mesh"
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=3e-4)  # Adam magnifies 1e-7 grad noise


def test_nan_batch_is_a_counted_skip_that_changes_nothing(setup, single):
    config, consts, rs, batches = setup
    state, _, (fn, dev_consts, batch_sh) = single
    before = jax.tree.map(np.asarray, (state.params, state.opt_state))
    poisoned = data.Batch(**{**batches[0].__dict__, "audio": np.full_like(batches[0].audio, np.nan)})
    state, m1 = fn(state, dev_consts, data.to_device(poisoned, batch_sh))
    m1 = jax.device_get(m1)
    assert not bool(m1["ok"]) and int(m1["bad_streak"]) == 1 and int(m1["bad_total"]) == 1
    after = jax.tree.map(np.asarray, (state.params, state.opt_state))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)
    state, m2 = fn(state, dev_consts, data.to_device(poisoned, batch_sh))
    assert int(jax.device_get(m2)["bad_streak"]) == 2
    state, m3 = fn(state, dev_consts, data.to_device(batches[1], batch_sh))
    m3 = jax.device_get(m3)
    assert bool(m3["ok"]) and int(m3["bad_streak"]) == 0 and int(m3["bad_total"]) == 2
    assert int(state.step) == 6  # every batch is counted, applied or not


def test_render_overflow_is_a_counted_skip(setup, single):
    """Footprints far larger than the rest pose's (every Gaussian 100x wider, so each covers every bin of the
    frame) overflow the step's render capacity: the step is counted as bad and changes nothing. The avatar is an
    input of the step, so the single-device step compiled once serves (no compile of a smaller-capacity step)."""
    config, consts, rs, batches = setup
    _, _, (fn, _, batch_sh) = single
    one = sharding.make_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])
    big = dataclasses.replace(consts, avatar=dataclasses.replace(consts.avatar,
                                                                 log_scales=consts.avatar.log_scales + np.log(100.0)))
    ri = big.avatar.render_inputs()
    camera = look_at(np.array([0.0, 0.3, -2.6]), np.array([0.0, 0.3, 0.0]), width=SIZE, height=SIZE, fov_y_deg=40)
    assert step.intersection_count(ri["means"], ri["quats"], ri["scales"], camera) > rs.capacity  # really overflows
    _, fresh = state_lib.create_state(config, one, make_optimizer(config.train))
    before = jax.tree.map(np.asarray, (fresh.params, fresh.opt_state))
    state, m = fn(fresh, jax.device_put(big, step.constant_shardings(one, big)), data.to_device(batches[0], batch_sh))
    m = jax.device_get(m)
    assert m["overflow"] == 1.0 and m["ok"] == 0.0 and m["bad_total"] == 1 and m["bad_streak"] == 1
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves((state.params, state.opt_state)), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_schedule_warms_up_then_decays_to_the_end_ratio():
    c = tiny_config(steps=20, warmup_steps=5, learning_rate=0.01, end_lr_ratio=0.1)
    lr = learning_rate_schedule(c.train)
    np.testing.assert_allclose([float(lr(0)), float(lr(5)), float(lr(20))], [0.0, 0.01, 0.001], rtol=1e-5)
    assert float(lr(3)) < float(lr(5)) and float(lr(12)) < float(lr(5))


def test_gradient_accumulation_applies_every_k_batches():
    c = tiny_config(grad_accum=2, steps=10, warmup_steps=0)
    opt = make_optimizer(c.train)
    params = {"w": jnp.ones((3,))}
    s = opt.init(params)
    u1, s = opt.update({"w": jnp.ones((3,))}, s, params)
    u2, s = opt.update({"w": jnp.ones((3,))}, s, params)
    assert float(jnp.abs(u1["w"]).max()) == 0.0 and float(jnp.abs(u2["w"]).max()) > 0.0


@pytest.mark.parametrize("key,value,needle", [("learning_rate", 0.0, "learning_rate must be positive"),
                                              ("grad_accum", 0, "grad_accum must be positive"),
                                              ("end_lr_ratio", 2.0, "end_lr_ratio must be in")])
def test_bad_optimizer_config_is_a_config_error(key, value, needle):
    c = tiny_config()
    c.train[key] = value
    with pytest.raises(ConfigError, match=needle):
        make_optimizer(c.train)


def test_keypoint_loss_without_landmarks_is_refused():
    with pytest.raises(ConfigError, match="loss.keypoints"):
        step.make_constants(tiny_config(), synthetic_avatar(100, 8), None)
