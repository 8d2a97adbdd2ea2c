"""Video score distillation (Eq. 9): the hook's gradient on the frames is autodiff of the stop-gradient
surrogate, and a teacher that predicts the true noise gives none."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.config import load_config
from avatar_jax.teacher import schedules, tiny
from avatar_jax.teacher.teacher import Conditions
from avatar_jax.train import losses, vsd

B, T, SIZE = 2, 3, 16


@pytest.fixture(scope="module")
def setup():
    config = load_config("tiny", [])
    teacher, vae = tiny.build(config.teacher)
    # a fresh adapter adds nothing (zero projections); give it weights so the audio reaches eps-hat
    for proj in teacher.adapter.block_proj.values():
        proj.kernel[...] = 0.1 * jax.random.normal(jax.random.key(7), proj.kernel.shape)
    text = tiny.null_text(config.teacher)
    frames = jax.random.uniform(jax.random.key(0), (B, T, SIZE, SIZE, 3))
    audio = 0.1 * jax.random.normal(jax.random.key(1), (B, T * 640))
    return teacher, vae, text, frames, audio


def _surrogate(teacher, vae, frames, cond, key, settings):
    """The Eq. 9 surrogate written out: ``sum(sg(w (eps_hat - eps)) * z(frames)) / z.size``."""
    z = vae.normalize(vae.latent_mean(frames * 2.0 - 1.0))
    k_tau, k_eps = jax.random.split(key)
    tau = jax.random.uniform(k_tau, (B,), minval=settings.tau_min, maxval=settings.tau_max)
    eps = jax.random.normal(k_eps, z.shape)
    x = schedules.add_noise(teacher.schedule, jax.lax.stop_gradient(z), eps, tau)
    eps_hat = teacher.epsilon(x, tau, cond, settings.text_scale, settings.audio_scale)
    w = vsd.weight(teacher.schedule, tau, settings.weighting)[:, None, None, None, None]
    return jnp.sum(jax.lax.stop_gradient(w * (eps_hat - eps)) * z) / z.size


def test_vsd_gradient_is_autodiff_of_the_surrogate_and_moves_with_the_audio(setup):
    teacher, vae, text, frames, audio = setup
    settings = vsd.VSDSettings(text_scale=1.0, audio_scale=2.0)
    distiller, params = vsd.split_teacher(teacher, vae, text, text, settings)

    @jax.jit
    def both(params, frames, audio):
        hook = distiller.hook(params, audio, jnp.int32(5))
        g_hook = jax.grad(lambda r: losses.vsd_term(r, hook))(frames)
        t, v = nnx.merge(distiller.denoiser_def, params.denoiser), nnx.merge(distiller.vae_def, params.vae)
        cond = Conditions(text=jnp.broadcast_to(text, (B, *text.shape[1:])), null_text=text,
                          audio=vsd.teacher_audio(audio, T, settings.n_mels, settings.fps))
        key = jax.random.fold_in(jax.random.key(settings.seed), 5)
        g_auto = jax.grad(lambda r: _surrogate(t, v, r, cond, key, settings))(frames)
        return g_hook, g_auto

    g_hook, g_auto = both(params, frames, audio)
    scale = float(jnp.abs(g_auto).max())
    assert scale > 1e-6
    np.testing.assert_allclose(np.asarray(g_hook), np.asarray(g_auto), atol=1e-5 * scale, rtol=0)
    g_silent, _ = both(params, frames, jnp.zeros_like(audio))
    assert float(jnp.abs(g_silent - g_hook).max()) > 1e-3 * scale  # the teacher hears the audio


class _TrueNoiseTeacher(nnx.Module):
    """Predicts exactly the noise that was added to the given clean latent ``z0``."""

    def __init__(self, z0):
        self.schedule = schedules.FlowMatching()
        self.z0 = nnx.Variable(z0)

    def epsilon(self, x, tau, cond, text_scale=1.0, audio_scale=1.0):
        s = self.schedule
        tau = tau[:, None, None, None, None]
        return (x - s.alpha(tau) * self.z0[...]) / s.sigma(tau)


def test_a_teacher_that_predicts_the_true_noise_gives_zero_gradient(setup):
    _, vae, text, frames, _ = setup
    z0 = vae.normalize(vae.latent_mean(frames * 2.0 - 1.0))
    cond = Conditions(text=text, null_text=text)
    settings = vsd.VSDSettings(weighting="uniform")
    g = jax.jit(lambda f: vsd.frame_gradient(_TrueNoiseTeacher(z0), vae, f, cond, jax.random.key(3), settings))(frames)
    # a wrong clean latent gives a clearly non-zero gradient through the same path
    g_off = jax.jit(lambda f: vsd.frame_gradient(_TrueNoiseTeacher(z0 + 0.5), vae, f, cond, jax.random.key(3),
                                                 settings))(frames)
    off = float(jnp.abs(g_off).max())
    assert off > 1e-5
    assert float(jnp.abs(g).max()) < 1e-4 * off


# ---------------------------------------------------------------- the distillation step, sharded

STUDENT = ["model.num_particles=8", "model.d_model=16", "model.num_heads=2", "audio.embedded_dim=16",
           "audio.embedded_width=16", "audio.embedded_depth=1", "train.batch_size=8", f"train.seq_len={T}",
           "train.warmup_steps=1", "loss.keypoints=0", "loss.vsd=100.0"]


def _distill_run(mesh_shape, devices, steps=2, variational=False):
    from avatar_jax.geometry import look_at
    from avatar_jax.model.canonical import synthetic_avatar
    from avatar_jax.train import data, sharding, step
    from avatar_jax.train import state as state_lib
    from avatar_jax.train.optimizer import make_optimizer

    config = load_config("tiny", STUDENT)
    avatar = synthetic_avatar(160, 8, seed=1)
    camera = look_at(np.array([0.0, 0.3, -2.6]), np.array([0.0, 0.3, 0.0]), width=SIZE, height=SIZE, fov_y_deg=40)
    consts = step.make_constants(config, avatar, None)
    rs = step.RenderSettings(SIZE, SIZE, step.render_capacity(avatar, camera, 4.0), (0.9, 0.9, 0.9), "xla")
    mesh = sharding.make_mesh(mesh_shape, devices)
    optimizer = make_optimizer(config.train)
    graphdef, state = state_lib.create_state(config, mesh, optimizer)
    teacher, vae = tiny.build(config.teacher)
    text = tiny.null_text(config.teacher)
    settings = vsd.VSDSettings(audio_scale=2.0, variational=variational, lora_rank=2, lora_lr=1e-2)
    distiller, tparams = vsd.split_teacher(teacher, vae, text, text, settings)
    tsh = vsd.teacher_shardings(mesh, tparams)
    tparams = jax.device_put(tparams, tsh)
    score = score_sh = None
    if variational:
        score = vsd.init_score(teacher, distiller)
        score_sh = vsd.score_shardings(mesh, distiller, score)
        score = jax.device_put(score, score_sh)
    const_sh = step.constant_shardings(mesh, consts)
    rng = np.random.default_rng(0)
    b = 8
    batches = []
    for _ in range(steps):
        kp = {"face": (478, 2), "hands": (2, 21, 2), "body": (33, 2)}
        fields = {k: np.zeros((b, T, *s), np.float32) for k, s in kp.items()}
        fields.update({k + "_conf": np.zeros((b, T, *s[:-1]), np.float32) for k, s in kp.items()})
        batches.append(data.Batch(
            audio=(0.1 * rng.standard_normal((b, T * 640))).astype(np.float32),
            frames=rng.integers(0, 256, (b, T, SIZE, SIZE, 3), dtype=np.uint8),
            masks=np.full((b, T, SIZE, SIZE), 255, np.uint8), K=np.broadcast_to(np.asarray(camera.K), (b, 3, 3)),
            viewmat=np.broadcast_to(np.asarray(camera.viewmat), (b, 4, 4)), **fields))
    batch_sh = data.batch_shardings(mesh, batches[0])
    fn = step.make_train_step(graphdef, optimizer, rs, config.loss, state_shardings=jax.tree.map(
        lambda x: x.sharding, state), const_shardings=const_sh, batch_shardings=batch_sh, mesh=mesh,
        distill=distiller, teacher_shardings=tsh, score_shardings=score_sh)
    consts = jax.device_put(consts, const_sh)
    history, scores = [], [jax.device_get(score)]  # host copies: the step donates the score it is given
    for batch in batches:
        if variational:
            state, score, metrics = fn(state, consts, data.to_device(batch, batch_sh), tparams, score)
            scores.append(jax.device_get(score))
        else:
            state, metrics = fn(state, consts, data.to_device(batch, batch_sh), tparams)
        history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    if variational:
        return state, history, scores
    return state, history, tparams


def test_distillation_step_on_8_devices_equals_one_device():
    ref_state, ref_hist, _ = _distill_run({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])
    state, hist, tparams = _distill_run({"data": 2, "fsdp": 2, "model": 2}, jax.devices()[:8])
    for m in ref_hist:
        assert m["ok"] == 1.0 and m["vsd"] != 0.0
    np.testing.assert_allclose([m["loss"] for m in hist], [m["loss"] for m in ref_hist], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([m["grad_norm"] for m in hist], [m["grad_norm"] for m in ref_hist], rtol=1e-5)
    # step 2's loss already depends on step 1's parameters; Adam's m/sqrt(v) turns ~1e-9 reduction-order noise in
    # near-zero gradient components into a fraction of an lr-sized update, so parameters are compared at that scale
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=3e-4)
    split = [x for x in jax.tree.leaves(tparams.denoiser) if not x.sharding.is_fully_replicated]
    assert any({"fsdp", "model"} <= set(jax.tree.leaves(tuple(x.sharding.spec))) for x in split)


def test_per_device_teacher_memory_falls_as_fsdp_x_model_grows():
    """Compiled memory analysis of the teacher side of the step (a wider tiny DiT, so its parameters dominate):
    argument bytes per device, less the frames and audio, fall with fsdp x model."""
    from avatar_jax.train import sharding

    config = load_config("tiny", ["teacher.num_heads=8", "teacher.head_dim=16", "teacher.ffn_dim=512",
                                  "teacher.num_layers=4"])
    abstract = nnx.eval_shape(lambda: tiny.build(config.teacher))
    text = jax.ShapeDtypeStruct((1, 2, 8), jnp.float32)
    distiller, params = vsd.split_teacher(*abstract, text, text, vsd.VSDSettings())
    per_device = []
    for shape in ({"data": 8, "fsdp": 1, "model": 1}, {"data": 4, "fsdp": 2, "model": 1},
                  {"data": 2, "fsdp": 2, "model": 2}, {"data": 1, "fsdp": 4, "model": 2}):
        mesh = sharding.make_mesh(shape, jax.devices()[:8])
        compiled = vsd.lower_frame_gradient(distiller, params, vsd.teacher_shardings(mesh, params), mesh,
                                            (8, T, SIZE, SIZE, 3), T * 640).compile()
        io = 8 // (shape["data"] * shape["fsdp"]) * (T * SIZE * SIZE * 3 + T * 640) * 4 + 4  # frames, audio, step
        per_device.append(compiled.memory_analysis().argument_size_in_bytes - io)
    full = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params.denoiser))
    assert per_device[0] >= full  # fsdp x model = 1: the whole teacher on every device
    assert all(a > b for a, b in zip(per_device, per_device[1:], strict=False)), per_device
    assert per_device[-1] < 0.3 * per_device[0], per_device


# ---------------------------------------------------------------- variational form (a LoRA score of the student)


def test_variational_gradient_uses_the_lora_score_and_the_score_learns_the_renders(setup):
    """Variational VSD: the hook's gradient is autodiff of ``sum(sg(w (eps_hat - eps_phi)) z) / z.size``; with the
    LoRA at zero and no guidance eps_phi is the teacher's own eps-hat, so the gradient is 0; AdamW steps of the
    score on the renders lower its denoising loss, change only the LoRA, and then the gradient is no longer 0."""
    teacher, vae, text, frames, audio = setup
    settings = vsd.VSDSettings(text_scale=1.0, audio_scale=1.0, variational=True, lora_rank=2, lora_lr=1e-2)
    teacher = nnx.clone(teacher)
    distiller, params = vsd.split_teacher(teacher, vae, text, text, settings)
    score = vsd.init_score(teacher, distiller)
    assert distiller.variational and jax.tree.leaves(score.lora)
    assert not jax.tree.leaves(nnx.state(nnx.merge(distiller.denoiser_def, params.denoiser), nnx.LoRAParam))

    plain, _ = vsd.split_teacher(nnx.merge(distiller.denoiser_def, params.denoiser), vae, text, text,
                                 vsd.VSDSettings())

    @jax.jit
    def grads(params, score, frames, audio):
        g_hook = jax.grad(lambda r: losses.vsd_term(r, distiller.hook(params, audio, jnp.int32(4), score)))(frames)
        g_sds = jax.grad(lambda r: losses.vsd_term(r, plain.hook(params, audio, jnp.int32(4))))(frames)
        t = nnx.merge(distiller.denoiser_def, params.denoiser)
        phi = distiller.score_model(params, score)
        cond = Conditions(text=jnp.broadcast_to(text, (B, *text.shape[1:])), null_text=text,
                          audio=vsd.teacher_audio(audio, T, settings.n_mels, settings.fps))
        key = jax.random.fold_in(jax.random.key(settings.seed), 4)

        def surrogate(r):
            z = vae.normalize(vae.latent_mean(r * 2.0 - 1.0))
            k_tau, k_eps = jax.random.split(key)
            tau = jax.random.uniform(k_tau, (B,), minval=settings.tau_min, maxval=settings.tau_max)
            x = schedules.add_noise(t.schedule, jax.lax.stop_gradient(z), jax.random.normal(k_eps, z.shape), tau)
            diff = t.epsilon(x, tau, cond, 1.0, 1.0) - vsd.score_epsilon(phi, x, tau, cond)
            w = vsd.weight(t.schedule, tau, settings.weighting)[:, None, None, None, None]
            return jnp.sum(jax.lax.stop_gradient(w * diff) * z) / z.size

        return g_hook, jax.grad(surrogate)(frames), g_sds

    g0, _, sds = grads(params, score, frames, audio)
    assert float(jnp.abs(sds).max()) > 1e-6
    assert float(jnp.abs(g0).max()) < 1e-5 * float(jnp.abs(sds).max())  # eps_phi = eps_hat at the start

    update = jax.jit(distiller.update_score)
    history = []
    for _ in range(6):  # the same renders each step: the score learns their latents' noise
        score, loss = update(params, score, frames, audio, jnp.int32(0))
        history.append(float(loss))
    assert history[-1] < 0.9 * history[0], history
    changed = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(score.lora),
                                                          jax.tree.leaves(vsd.init_score(teacher, distiller).lora),
                                                          strict=True)]
    assert max(changed) > 1e-4
    g_hook, g_auto, _ = grads(params, score, frames, audio)
    scale = float(jnp.abs(g_auto).max())
    assert scale > 1e-3 * float(jnp.abs(sds).max())
    np.testing.assert_allclose(np.asarray(g_hook), np.asarray(g_auto), atol=1e-5 * scale, rtol=0)


def test_fold_lora_keeps_the_teacher_function(setup):
    """A teacher that carries attention LoRA (the OmniAvatar recipe) is folded into its kernels before the
    variational score adds its own: the same eps-hat, and no LoRA left."""
    from avatar_jax.teacher.dit import add_lora

    teacher, _, text, _, _ = setup
    teacher = nnx.clone(teacher)
    x = jax.random.normal(jax.random.key(5), (B, 2, 4, 4, 4))
    tau = jnp.full((B,), 0.5)
    cond = Conditions(text=jnp.broadcast_to(text, (B, *text.shape[1:])), null_text=text)
    plain = teacher.epsilon(x, tau, cond)
    add_lora(teacher.dit, 2, rngs=nnx.Rngs(3))
    lora = nnx.state(teacher, nnx.LoRAParam)
    lora = jax.tree.map(lambda v: 0.2 * jax.random.normal(jax.random.key(v.size), v.shape), lora)
    nnx.update(teacher, lora)
    before = teacher.epsilon(x, tau, cond)
    assert float(jnp.abs(before - plain).max()) > 1e-3 * float(jnp.abs(plain).max())  # the LoRA matters
    vsd.fold_lora(teacher)
    assert not jax.tree.leaves(nnx.state(teacher, nnx.LoRAParam))
    after = teacher.epsilon(x, tau, cond)
    np.testing.assert_allclose(np.asarray(after), np.asarray(before), atol=1e-5 * float(jnp.abs(before).max()))


def test_variational_distillation_step_trains_the_lora_score_alongside():
    """The variational step takes and returns the LoRA score: step 1 (LoRA at zero, guidance over audio only)
    still gives a VSD gradient, the score's denoising loss is reported, its LoRA moves every step, the teacher
    does not, and the student's parameters move."""
    from avatar_jax.train import sharding
    from avatar_jax.train import state as state_lib
    from avatar_jax.train.optimizer import make_optimizer

    state, hist, scores = _distill_run({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1], variational=True)
    for m in hist:
        assert m["ok"] == 1.0 and np.isfinite(m["vsd_score"]) and m["vsd_score"] > 0
    assert hist[0]["vsd"] != 0.0 and hist[0]["grad_norm"] > 0
    for before, after in zip(scores, scores[1:], strict=False):
        moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                    for a, b in zip(jax.tree.leaves(after.lora), jax.tree.leaves(before.lora), strict=True))
        assert moved > 1e-4
    config = load_config("tiny", STUDENT)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])
    _, fresh = state_lib.create_state(config, mesh, make_optimizer(config.train))
    assert any(float(np.abs(np.asarray(a) - np.asarray(b)).max()) > 0
               for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(fresh.params), strict=True))


def test_load_teacher_refuses_a_missing_or_wrong_teacher_dir(tmp_path):
    from avatar_jax.errors import ConfigError, InputError
    from avatar_jax.train import sharding

    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])
    with pytest.raises(ConfigError, match="vsd.teacher"):
        vsd.load_teacher(load_config("tiny", ["loss.vsd=1.0"]), mesh)
    with pytest.raises(InputError, match="not a directory"):
        vsd.load_teacher(load_config("tiny", ["loss.vsd=1.0", f"vsd.teacher={tmp_path / 'nope'}"]), mesh)
    with pytest.raises(ConfigError, match="lora_rank"):
        vsd.settings_from_config(load_config("tiny", ["vsd.variational=true", "vsd.lora_rank=0"]), 8, 25.0)


# ---------------------------------------------------------------- the training job: the LoRA score is checkpointed

TEACHER_SMALL = ["teacher.num_layers=1", "teacher.num_heads=2", "teacher.head_dim=8", "teacher.ffn_dim=16",
                 "teacher.adapter_hidden=8", "teacher.n_mels=4", "teacher.vae_base_dim=4", "teacher.vae_z_dim=4"]
JOB = ["model.num_particles=8", "model.d_model=16", "model.num_heads=2", "audio.embedded_dim=16",
       "audio.embedded_width=16", "audio.embedded_depth=1", "train.batch_size=2", "train.seq_len=3",
       "train.steps=2", "train.warmup_steps=1", "train.log_every=1", "train.checkpoint_every=1",
       "train.keep_checkpoints=5", "train.eval_clips=0", "train.capacity_factor=2.0", "data.num_threads=1",
       "loss.image=0", "loss.vsd=100.0", "vsd.variational=true", "vsd.lora_rank=2", "vsd.lora_lr=0.01",
       "vsd.audio_scale=2.0", "mesh.data=1", "mesh.model=-1"]


def _teacher_workdir(work: str) -> str:
    """A tiny-teacher workdir as `avatar-jax train --config configs/teacher_tiny.py` leaves it, without the
    training: the fresh modules, their zero-initialised projections given weights, latent statistics set."""
    from avatar_jax.teacher import tiny_training
    from avatar_jax.train.checkpoint import Checkpointer

    config = load_config("configs/teacher_tiny.py", TEACHER_SMALL)
    state = tiny_training.trainer_for(config).init_state()
    rng = np.random.default_rng(3)  # numpy: one jax.random call per leaf shape would compile each
    state["dit"] = jax.tree.map(lambda a: a + 0.05 * rng.standard_normal(a.shape).astype(a.dtype), state["dit"])
    state["stats_ready"] = jnp.ones((), jnp.bool_)
    with Checkpointer(work, config, fingerprint_keys=tiny_training.FINGERPRINT_KEYS) as ckpt:
        ckpt.save(1, state, {}, force=True)
    return work


def _job_results(config, mesh, wanted):
    """``[(train state, LoRA score)]`` of the checkpoints ``wanted`` ``[(workdir, step)]`` of variational VSD runs."""
    from avatar_jax.train import loop
    from avatar_jax.train import state as state_lib
    from avatar_jax.train.checkpoint import Checkpointer
    from avatar_jax.train.optimizer import make_optimizer

    teacher = vsd.load_teacher(config, mesh)
    abstract_score = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), teacher.score,
                                  teacher.score_shardings)
    abstract = state_lib.abstract_state(config, mesh, make_optimizer(config.train))[1]
    out = []
    for work, step in wanted:
        with Checkpointer(work, config) as ckpt:
            out.append((ckpt.restore(step, abstract)[0], ckpt.restore_item(step, loop.SCORE_ITEM, abstract_score)))
    return out


def test_a_resumed_variational_vsd_job_continues_its_lora_score_exactly(tmp_path):
    """`train` with variational VSD saves the LoRA score (and its AdamW state) with every checkpoint: a job killed
    after step 1 and rerun ends on the same student, score and losses as the uninterrupted job (a score restarted
    from zero would differ: it moves every step)."""
    import shutil

    from avatar_jax.data import synthetic
    from avatar_jax.train import loop
    from avatar_jax.train.sharding import make_mesh

    data = str(tmp_path / "clips")
    synthetic.prepare_synthetic("synthetic", data, synthetic.SyntheticOptions(
        size=SIZE, num_gaussians=160, voices=("en-us",), sentences=1, framing="face"), held_out=0.0, progress=False)
    config = load_config("tiny", JOB + [f"vsd.teacher={_teacher_workdir(str(tmp_path / 'teacher'))}"])
    mesh = make_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])
    full = str(tmp_path / "full")
    summary = loop.train(config, full, data_root=data, mesh=mesh, progress=False)
    assert summary["step"] == 2 and summary["bad_steps"] == 0

    work = str(tmp_path / "resumed")  # killed after step 1: only its checkpoint is left
    shutil.copytree(full, work)
    shutil.rmtree(os.path.join(work, "checkpoints", "2"))
    resumed = loop.train(config, work, data_root=data, mesh=mesh, progress=False)
    np.testing.assert_allclose(resumed["losses"], summary["losses"], rtol=1e-5)

    (_, score_1), (state_a, score_a), (state_b, score_b) = _job_results(config, mesh, [(full, 1), (full, 2),
                                                                                      (work, 2)])
    moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(jax.tree.leaves(score_a.lora), jax.tree.leaves(score_1.lora), strict=True))
    assert moved > 1e-4  # the score learnt at step 2: a resume from a fresh score could not match
    for a, b in zip(jax.tree.leaves((state_a, score_a)), jax.tree.leaves((state_b, score_b)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
