"""Teacher interface: epsilon-hat from flow-matching and epsilon teachers, guidance, audio adapter, LoRA
training with the DiT frozen, reference frame, sampler, missing weights."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.teacher import checkpoint, dit, loaders, sampler, schedules
from avatar_jax.teacher.audio_adapter import AudioAdapter, pack_per_latent_frame
from avatar_jax.teacher.teacher import Conditions, VideoTeacher
from avatar_jax.train import sharding

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "data")
SHAPE = (2, 3, 4, 4, 4)  # (B, F, h, w, z)


class Oracle(nnx.Module):
    """The exact denoiser of a one-point data distribution at ``x0``: velocity ``(x - x0) / tau`` (flow) or
    epsilon ``(x - alpha x0) / sigma`` (VP). Knowing the truth, the conversions can be checked exactly."""

    def __init__(self, x0, schedule):
        self.x0 = nnx.Variable(jnp.asarray(x0))
        self.schedule = schedule

    def guided_prediction(self, x, tau, cond, text_scale=1.0, audio_scale=1.0):
        s = self.schedule
        tau = jnp.asarray(tau, jnp.float32)
        tau = tau.reshape(tau.shape + (1,) * (x.ndim - tau.ndim)) if tau.ndim else tau
        if s.prediction == "velocity":
            return (x - self.x0[...]) / tau
        return (x - s.alpha(tau) * self.x0[...]) / s.sigma(tau)


@pytest.mark.parametrize("schedule", [schedules.FlowMatching(), schedules.VariancePreserving()])
def test_epsilon_hat_and_x0_hat_are_exact_for_both_kinds(schedule):
    k0, k1 = jax.random.split(jax.random.key(0))
    x0, eps = jax.random.normal(k0, SHAPE), jax.random.normal(k1, SHAPE)
    tau = jnp.array([0.3, 0.8])
    x_t = schedules.add_noise(schedule, x0, eps, tau)
    oracle = Oracle(x0, schedule)
    pred = oracle.guided_prediction(x_t, tau, None)
    np.testing.assert_allclose(schedules.to_epsilon(schedule, pred, x_t, tau), eps, atol=1e-4)
    np.testing.assert_allclose(schedules.to_x0(schedule, pred, x_t, tau), x0, atol=1e-4)
    if schedule.prediction == "velocity":  # v = eps - x0 and x_t = (1 - t) x0 + t eps
        np.testing.assert_allclose(pred, eps - x0, atol=1e-4)
        np.testing.assert_allclose(x_t[1], 0.2 * x0[1] + 0.8 * eps[1], atol=1e-6)
    else:  # variance preserving: alpha^2 + sigma^2 = 1, alpha falls from ~1 to ~0
        a, s = schedule.alpha(tau), schedule.sigma(tau)
        np.testing.assert_allclose(a ** 2 + s ** 2, 1.0, atol=1e-5)
        assert float(schedule.alpha(0.0)) > 0.999 and float(schedule.alpha(1.0)) < 0.01


@pytest.mark.parametrize("schedule,atol", [(schedules.FlowMatching(), 1e-4), (schedules.VariancePreserving(), 1e-3)])
def test_sampler_reaches_the_data_point(schedule, atol):
    x0 = jax.random.normal(jax.random.key(1), SHAPE)
    noise = jax.random.normal(jax.random.key(2), SHAPE)
    cond = Conditions(text=jnp.zeros((2, 1, 1)), null_text=jnp.zeros((2, 1, 1)))
    out = sampler.sample(Oracle(x0, schedule), noise, cond, num_steps=4, shift=3.0 if schedule.prediction ==
                         "velocity" else 1.0)
    np.testing.assert_allclose(out, x0, atol=atol)


def test_flow_step_is_euler_and_levels_are_shifted():
    levels = sampler.noise_levels(4, shift=5.0)
    assert float(levels[0]) == 1.0 and float(levels[-1]) == 0.0
    np.testing.assert_allclose(levels[2], 5 * 0.5 / (1 + 4 * 0.5), rtol=1e-6)
    x, x0 = jax.random.normal(jax.random.key(3), SHAPE), jnp.ones(SHAPE)
    oracle = Oracle(x0, schedules.FlowMatching())
    v = oracle.guided_prediction(x, 0.7, None)
    np.testing.assert_allclose(sampler.step(oracle, x, 0.7, 0.4, None), x + (0.4 - 0.7) * v, atol=1e-5)


def _teacher(lora=False):
    spec = dit.WanDiTSpec(num_heads=2, head_dim=12, in_channels=4, out_channels=4, text_dim=8, freq_dim=16,
                          ffn_dim=16, num_layers=2)
    model = dit.WanDiT(spec, rngs=nnx.Rngs(0))
    if lora:
        dit.add_lora(model, 2, rngs=nnx.Rngs(5))
    adapter = AudioAdapter(6, spec.dim, (0, 1), hidden=8, rngs=nnx.Rngs(1))
    return VideoTeacher(model, schedules.FlowMatching(), adapter)


@nnx.jit
def _predict(teacher, x, tau, text, audio):
    return teacher.predict(x, tau, text, audio)


@nnx.jit
def _dit(model, x, t, text):
    return model(x, t, text)


def _cond(seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    return Conditions(text=jax.random.normal(ks[0], (2, 5, 8)), null_text=jnp.zeros((1, 5, 8)),
                      audio=jax.random.normal(ks[1], (2, 9, 6)))


def test_audio_packing_per_latent_frame():
    feats = jnp.arange(9 * 2, dtype=jnp.float32).reshape(1, 9, 2)
    packed = pack_per_latent_frame(feats)
    assert packed.shape == (1, 3, 8)
    np.testing.assert_array_equal(packed[0, 0], np.tile(feats[0, 0], 4))  # latent 0 <- frame 0 only
    np.testing.assert_array_equal(packed[0, 1], feats[0, 1:5].reshape(-1))  # latent 1 <- frames 1..4
    with pytest.raises(ValueError, match="1 \\+ 4"):
        pack_per_latent_frame(feats[:, :8])


def test_adapter_starts_neutral_and_is_local_in_time():
    teacher = _teacher()
    cond = _cond()
    x = jax.random.normal(jax.random.key(4), SHAPE)
    tau = jnp.array([0.5, 0.5])
    plain = _dit(teacher.dit, x, teacher.schedule.timestep(tau), cond.text)
    np.testing.assert_allclose(_predict(teacher, x, tau, cond.text, cond.audio), plain, atol=1e-6)
    for proj in teacher.adapter.block_proj.values():  # give the adapter weights
        proj.kernel.set_value(jax.random.normal(jax.random.key(6), proj.kernel.shape))
    grid = teacher.dit.grid(SHAPE[1:4])
    offsets = teacher.adapter(cond.audio, grid)
    changed = cond.audio.at[:, 5:9].set(0.0)  # frames 5..8 feed latent frame 2 only
    moved = teacher.adapter(changed, grid)
    per_frame = grid[1] * grid[2]
    np.testing.assert_allclose(offsets[1][:, :2 * per_frame], moved[1][:, :2 * per_frame], atol=1e-6)
    assert float(jnp.abs(offsets[1][:, 2 * per_frame:] - moved[1][:, 2 * per_frame:]).max()) > 1e-3
    assert float(jnp.abs(_predict(teacher, x, tau, cond.text, cond.audio) - plain).max()) > 1e-3


def test_classifier_free_guidance_over_text_and_audio():
    teacher = _teacher()
    for proj in teacher.adapter.block_proj.values():
        proj.kernel.set_value(jax.random.normal(jax.random.key(7), proj.kernel.shape))
    cond = _cond()
    x = jax.random.normal(jax.random.key(8), SHAPE)
    tau = jnp.array([0.6, 0.6])
    null_text = jnp.broadcast_to(cond.null_text, cond.text.shape)
    full = _predict(teacher, x, tau, cond.text, cond.audio)
    text_only = _predict(teacher, x, tau, cond.text, jnp.zeros_like(cond.audio))
    uncond = _predict(teacher, x, tau, null_text, jnp.zeros_like(cond.audio))
    guided = jax.jit(lambda t, x: t.guided_prediction(x, tau, cond, 5.0, 3.0))
    np.testing.assert_allclose(guided(teacher, x), uncond + 5 * (text_only - uncond) + 3 * (full - text_only),
                               atol=2e-4)
    scaled = nnx.jit(lambda t, x, ts, a: t.guided_prediction(x, tau, cond, ts, a))
    np.testing.assert_allclose(scaled(teacher, x, 1.0, 1.0), full, atol=2e-5)
    np.testing.assert_allclose(scaled(teacher, x, 0.0, 0.0), uncond, atol=2e-5)
    assert float(jnp.abs(full - text_only).max()) > 1e-3 and float(jnp.abs(text_only - uncond).max()) > 1e-3
    # Eq. 9's eps-hat of a flow teacher: x_t + (1 - tau) v_hat
    eps = nnx.jit(lambda t, x: t.epsilon(x, tau, cond, 5.0, 3.0))(teacher, x)
    np.testing.assert_allclose(eps, x + 0.4 * guided(teacher, x), atol=2e-4)


def test_adapter_and_lora_train_while_the_dit_stays_frozen():
    teacher = _teacher(lora=True)
    cond = _cond()
    x0 = jax.random.normal(jax.random.key(9), SHAPE)
    eps = jax.random.normal(jax.random.key(10), SHAPE)
    tau = jnp.array([0.4, 0.7])
    trainable = nnx.Any(nnx.LoRAParam, nnx.PathContains("adapter"))

    def loss(t):
        x_t = schedules.add_noise(t.schedule, x0, eps, tau)
        return jnp.mean((t.predict(x_t, tau, cond.text, cond.audio) - (eps - x0)) ** 2)

    grads = nnx.jit(nnx.grad(loss, argnums=nnx.DiffState(0, trainable)))(teacher)
    paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(grads)}
    assert paths and all("lora" in p or p.startswith("adapter") for p in paths)
    assert any("block_proj" in p for p in paths)
    norms = {p: float(jnp.abs(v[...]).max()) for p, v in nnx.to_flat_state(grads)}
    assert max(v for p, v in norms.items() if "block_proj" in p) > 0  # the zero-started adapter learns
    frozen = nnx.state(teacher, nnx.Not(trainable))
    n_frozen = sum(a.size for a in jax.tree.leaves(frozen))
    assert n_frozen == sum(a.size for a in jax.tree.leaves(nnx.state(teacher.dit, nnx.Not(nnx.LoRAParam))))


def test_reference_frame_is_kept_by_the_sampler():
    teacher = _teacher()
    ref = jax.random.normal(jax.random.key(11), (2, 1, 4, 4, 4))
    cond = _cond()._replace(reference=ref)
    out = nnx.jit(lambda t, n: sampler.sample(t, n, cond, num_steps=2))(teacher, jax.random.normal(jax.random.key(12),
                                                                                                 SHAPE))
    np.testing.assert_array_equal(out[:, :1], ref)
    assert out.shape == SHAPE and bool(jnp.all(jnp.isfinite(out)))


def test_missing_teacher_weights_error_names_the_layout(tmp_path):
    with pytest.raises(checkpoint.TeacherWeightsError) as err:
        loaders.load_teacher(str(tmp_path), text_encoder=True)
    msg = str(err.value)
    for part in ("transformer/", "vae/", "text_encoder/", "diffusion_pytorch_model.safetensors.index.json",
                 "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"):
        assert part in msg
    # a complete folder (the golden DiT and VAE) loads
    shutil.copytree(os.path.join(GOLDEN, "wan_dit"), tmp_path / "transformer")
    with pytest.raises(checkpoint.TeacherWeightsError, match="missing vae/"):
        loaders.load_teacher(str(tmp_path))
    shutil.copytree(os.path.join(GOLDEN, "wan_vae"), tmp_path / "vae")
    weights = loaders.load_teacher(str(tmp_path))
    assert weights.dit.spec.num_layers == 2 and weights.vae.spec.z_dim == 4 and weights.text_encoder is None


def test_adapter_and_lora_parameters_carry_logical_axes():
    teacher = _teacher(lora=True)
    flat = nnx.to_flat_state(nnx.state(teacher, nnx.Param))
    assert any("adapter" in "/".join(map(str, p)) for p, _ in flat)
    for path, var in flat:
        names = var.get_metadata().get("out_sharding")
        assert names is not None and len(names) == len(var.shape), path
        sharding.logical_to_mesh_spec(tuple(names))
