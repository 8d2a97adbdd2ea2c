"""Training the *tiny teacher* (a CPU-sized Wan2.1-architecture DiT + causal VAE + audio adapter) on the
synthetic talking clips: ``avatar-jax train --config configs/teacher_tiny.py --workdir DIR [--data DIR]``.

It is a synthetic-data teacher for CPU experiments and tests, not Wan2.1. Two phases in one run:

    steps [0, teacher.vae_steps)        the VAE: L1 reconstruction (mouth region weighted up, from the
                                        clips' face keypoints) + a small KL, on windows of train.seq_len frames
    at step teacher.vae_steps           every training window encoded once by the frozen VAE (posterior
                                        means); their per-channel mean/std is the DiT's latent normalisation
    steps [vae_steps, train.steps)      the DiT + audio adapter from scratch with the flow-matching loss of
                                        :mod:`avatar_jax.teacher.training` (audio dropped at random, so the
                                        same network gives the unconditional velocity for guidance); the
                                        VAE frozen, latents = its posterior mean, normalised

Audio features are :func:`avatar_jax.train.vsd.teacher_audio` (log-mel bands per video frame), the same
the distillation step feeds the teacher. Checkpoints go through :class:`avatar_jax.train.checkpoint.Checkpointer`
(orbax, keep-N, SIGTERM, the data iterator's position): a resumed run continues with the same batches and
ends with the same parameters. The state is one pytree of plain dicts (see :func:`init_state`); one device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from avatar_jax.config import validate
from avatar_jax.errors import ConfigError, TrainingError
from avatar_jax.teacher import tiny, training
from avatar_jax.train import data
from avatar_jax.train.vsd import teacher_audio

SUMMARY_FILE = "summary.json"
TARGET = "teacher"
# Config entries that fix the tiny teacher's parameter shapes, its data and the phase boundary.
FINGERPRINT_KEYS = (
    "seed", "train.target", "train.batch_size", "train.seq_len", "data.fps", "data.stride",
    *(f"teacher.{k}" for k in ("num_layers", "num_heads", "head_dim", "ffn_dim", "freq_dim", "text_dim", "text_len",
                               "adapter_hidden", "n_mels", "vae_base_dim", "vae_z_dim", "vae_dim_mult", "vae_temporal",
                               "dtype", "seed", "vae_steps", "vae_frames")),
)
MOUTH_LANDMARKS = (13, 14, 61, 291)  # MediaPipe face mesh: upper lip, lower lip, mouth corners


def is_teacher_config(config) -> bool:
    return str(config.train.get("target", "avatar")) == TARGET


def check_config(config) -> None:
    """Refuse a tiny-teacher config that cannot train, before any data is read or compiled."""
    validate(config)
    t, tc = config.train, config.teacher
    for key in ("steps", "batch_size", "seq_len", "log_every"):
        if int(t[key]) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {t[key]}")
    k = 2 ** sum(bool(x) for x in tc.vae_temporal)
    if (int(t.seq_len) - 1) % k:
        raise ConfigError(f"train.seq_len={t.seq_len}: the tiny teacher's VAE needs 1 + {k}·n frames per window")
    if not 0 <= int(tc.vae_steps) < int(t.steps):
        raise ConfigError(f"teacher.vae_steps={tc.vae_steps} must be in [0, train.steps={t.steps}): the DiT "
                          "trains in the steps after it")
    if not 0.0 <= float(tc.audio_dropout) < 1.0:
        raise ConfigError(f"teacher.audio_dropout must be in [0, 1), got {tc.audio_dropout}")
    if min(float(tc.vae_lr), float(tc.dit_lr)) <= 0:
        raise ConfigError("teacher.vae_lr and teacher.dit_lr must be > 0")
    if jax.process_count() > 1:
        raise ConfigError("the tiny teacher trains in one process (it is CPU-sized); run it without --num-processes")


_TRAINERS: dict[str, TinyTeacherTrainer] = {}


def trainer_for(config) -> TinyTeacherTrainer:
    """The :class:`TinyTeacherTrainer` of ``config``, one per distinct config in a process: a resumed run or
    a reload in the same process reuses its traced and compiled steps."""
    key = json.dumps(json.loads(config.to_json()), sort_keys=True)
    if key not in _TRAINERS:
        _TRAINERS[key] = TinyTeacherTrainer(config)
    return _TRAINERS[key]


def _optimizer(lr: float, steps: int, warmup: int) -> optax.GradientTransformation:
    steps = max(steps, 2)
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, min(warmup, steps - 1), steps, end_value=0.1 * lr)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.0))


class TinyTeacherTrainer:
    """The modules' graph definitions, the optimisers and the jitted steps of one config."""

    def __init__(self, config):
        self.config = config
        tc, t = config.teacher, config.train
        teacher, vae = tiny.build(tc)
        self.teacher_def, self.teacher_template, self.teacher_rest = nnx.split(teacher, nnx.Param, ...)
        self.vae_def, self.vae_template, self.vae_rest = nnx.split(vae, nnx.Param, ...)
        self.z_dim = vae.spec.z_dim
        self.null_text = tiny.null_text(tc)
        self.vae_steps = int(tc.vae_steps)
        self.dit_steps = int(t.steps) - self.vae_steps
        self.vae_opt = _optimizer(float(tc.vae_lr), self.vae_steps, int(t.warmup_steps))
        self.dit_opt = _optimizer(float(tc.dit_lr), self.dit_steps, int(t.warmup_steps))
        self._fresh = (nnx.to_pure_dict(self.teacher_template), nnx.to_pure_dict(self.vae_template))
        self.vae_step = jax.jit(self._vae_step, donate_argnums=0)
        self.dit_step = jax.jit(self._dit_step, donate_argnums=0)
        self.encode = jax.jit(self._encode)

    # -- state -------------------------------------------------------------------------------------

    def init_state(self) -> dict:
        """``{step, vae, vae_opt, dit, dit_opt, latent_mean (z,), latent_std (z,), stats_ready}``."""
        dit_params, vae_params = jax.tree.map(jnp.array, self._fresh)
        return dict(step=jnp.zeros((), jnp.int32), vae=vae_params, vae_opt=self.vae_opt.init(vae_params),
                    dit=dit_params, dit_opt=self.dit_opt.init(dit_params),
                    latent_mean=jnp.zeros((self.z_dim,), jnp.float32), latent_std=jnp.ones((self.z_dim,), jnp.float32),
                    stats_ready=jnp.zeros((), jnp.bool_))

    def abstract_state(self) -> dict:
        sh = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                            jax.eval_shape(self.init_state))

    def modules(self, state: dict):
        """``(VideoTeacher, WanVAE)`` with the state's parameters and the latent normalisation in the VAE spec."""
        teacher = _merge(self.teacher_def, self.teacher_template, state["dit"], self.teacher_rest)
        vae = _merge(self.vae_def, self.vae_template, state["vae"], self.vae_rest)
        vae.spec = dataclasses.replace(vae.spec, latents_mean=tuple(float(x) for x in np.asarray(state["latent_mean"])),
                                       latents_std=tuple(float(x) for x in np.asarray(state["latent_std"])))
        return teacher, vae

    # -- the jitted steps --------------------------------------------------------------------------

    def _vae_loss(self, params, frames, weight, key):
        vae = _merge(self.vae_def, self.vae_template, params, self.vae_rest)
        moments = vae.encode(frames)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        logvar = jnp.clip(logvar, -20.0, 10.0)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        rec = vae.decode(z, clamp=False)
        target = frames[:, : rec.shape[1]]
        l1 = jnp.sum(weight[:, : rec.shape[1], ..., None] * jnp.abs(rec - target)) / (
            3.0 * jnp.sum(weight[:, : rec.shape[1]]))
        kl = 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
        return l1 + float(self.config.teacher.vae_kl) * kl, (l1, kl)

    def _vae_step(self, state, frames_u8, face, key):
        n = int(self.config.teacher.vae_frames)  # a shorter clip than the DiT's window: the VAE is the cost
        frames_u8, face = frames_u8[:, :n], face[:, :n]
        frames = frames_u8.astype(jnp.float32) / 127.5 - 1.0
        weight = mouth_weight(face, frames.shape[2:4], float(self.config.teacher.mouth_weight))
        (loss, (l1, kl)), grads = jax.value_and_grad(self._vae_loss, has_aux=True)(state["vae"], frames, weight, key)
        updates, opt = self.vae_opt.update(grads, state["vae_opt"], state["vae"])
        state = dict(state, vae=optax.apply_updates(state["vae"], updates), vae_opt=opt, step=state["step"] + 1)
        return state, {"loss": loss, "vae_l1": l1, "vae_kl": kl}

    def _encode(self, vae_params, frames_u8, audio):
        """A chunk of windows -> (VAE posterior means, the teacher's audio features)."""
        vae = _merge(self.vae_def, self.vae_template, vae_params, self.vae_rest)
        z = vae.latent_mean(frames_u8.astype(jnp.float32) / 127.5 - 1.0)
        return z, teacher_audio(audio, frames_u8.shape[1], int(self.config.teacher.n_mels), float(self.config.data.fps))

    def _dit_step(self, state, latents, feats, key):
        """``latents (B, F, h, w, z)`` normalised, ``feats (B, T, n_mels)``."""
        tc = self.config.teacher
        batch = training.Batch(latents, jnp.broadcast_to(self.null_text, (latents.shape[0], *self.null_text.shape[1:])),
                               feats)

        def loss_fn(params):
            teacher = _merge(self.teacher_def, self.teacher_template, params, self.teacher_rest)
            return training.flow_matching_loss(teacher, batch, self.null_text, key, text_dropout=0.0,
                                               audio_dropout=float(tc.audio_dropout))

        loss, grads = jax.value_and_grad(loss_fn)(state["dit"])
        updates, opt = self.dit_opt.update(grads, state["dit_opt"], state["dit"])
        state = dict(state, dit=optax.apply_updates(state["dit"], updates), dit_opt=opt, step=state["step"] + 1)
        return state, {"loss": loss}


def _merge(graphdef, template: nnx.State, pure_params: dict, rest: nnx.State):
    """``nnx.merge`` from a pure dict of parameters (what optax and the checkpoint hold); ``template`` is a
    Param state of the same graph (only its structure is used)."""
    state = jax.tree.map(lambda x: x, template)
    nnx.replace_by_pure_dict(state, pure_params)
    return nnx.merge(graphdef, state, rest)


def mouth_weight(face: jax.Array, hw: tuple[int, int], mouth_weight_value: float) -> jax.Array:
    """Pixel weights ``(B, T, H, W)`` for the VAE loss: 1, plus ``mouth_weight - 1`` in a Gaussian blob over
    the mouth (centre and width from the face keypoints ``(B, T, 478, 2)`` in pixels). Frames without a face
    (all keypoints 0) get weight 1 everywhere."""
    h, w = hw
    pts = face[:, :, jnp.array(MOUTH_LANDMARKS)]  # (B,T,4,2)
    centre = pts.mean(axis=2)
    width = jnp.maximum(jnp.linalg.norm(pts[:, :, 3] - pts[:, :, 2], axis=-1), 1.0)  # (B,T)
    ys, xs = jnp.meshgrid(jnp.arange(h) + 0.5, jnp.arange(w) + 0.5, indexing="ij")
    d2 = jnp.square(xs - centre[..., None, None, 0]) + jnp.square(ys - centre[..., None, None, 1])
    blob = jnp.exp(-0.5 * d2 / jnp.square(width)[..., None, None])
    has_face = jnp.any(face != 0, axis=(2, 3))[..., None, None]
    return 1.0 + (mouth_weight_value - 1.0) * blob * has_face


def _batch_key(seed: int, step: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), step)


def train_teacher(config, workdir: str, *, data_root: str | None = None, progress: bool = True) -> dict:
    """Train the tiny teacher of ``config`` on ``data_root`` (default ``config.data.root``) in ``workdir``;
    resumes from the workdir's latest checkpoint. Returns (and writes) the summary."""
    from avatar_jax.train import logging as train_logging
    from avatar_jax.train.checkpoint import Checkpointer, PreemptionGuard

    start_time = time.perf_counter()
    check_config(config)
    t, tc = config.train, config.teacher
    root = data_root or config.data.root
    source = data.make_source(config, root, "train")
    iterator = data.make_iterator(config, source)
    trainer = trainer_for(config)
    steps, vae_steps = int(t.steps), trainer.vae_steps
    with contextlib.ExitStack() as stack:
        ckpt = stack.enter_context(Checkpointer(workdir, config, fingerprint_keys=FINGERPRINT_KEYS))
        latest = ckpt.latest_step()
        history: list[float] = []
        if latest is not None:
            state, extra = ckpt.restore(latest, trainer.abstract_state())
            iterator.set_state(extra["data"])
            history = list(extra.get("losses", []))
        else:
            state = trainer.init_state()
        i = int(state["step"])

        def extra() -> dict:
            return {"data": iterator.get_state(), "losses": history}

        stopped, cache = None, None
        with train_logging.TrainLogger(workdir, steps, i, progress=progress) as log, PreemptionGuard() as preemption:
            log.print(f"tiny teacher (synthetic-data teacher, not Wan2.1): {source}, {source.height}x{source.width} "
                      f"frames; VAE steps 0-{vae_steps}, DiT + audio adapter steps {vae_steps}-{steps}")
            window_time, window_start = 0.0, i
            while i < steps:
                if preemption.requested:
                    stopped = "preempted"
                    break
                key = _batch_key(int(config.seed), i)
                if i >= vae_steps and cache is None:
                    # the frozen VAE's latents of every training window, once (rebuilt the same on resume)
                    tic = time.perf_counter()
                    latents, feats = encode_windows(trainer, state, source)
                    if not bool(state["stats_ready"]):
                        state = with_latent_stats(state, latents)
                    cache = ((latents - np.asarray(state["latent_mean"])) / np.asarray(state["latent_std"]), feats)
                    log.print(f"encoded {latents.shape[0]} windows in {time.perf_counter() - tic:.0f} s; latent "
                              "normalisation: mean " + " ".join(f"{x:+.2f}" for x in np.asarray(state["latent_mean"]))
                              + ", std " + " ".join(f"{x:.2f}" for x in np.asarray(state["latent_std"])))
                tic = time.perf_counter()
                if i < vae_steps:
                    batch = data.next_batch(iterator, root)
                    state, metrics = trainer.vae_step(state, jnp.asarray(batch.frames), jnp.asarray(batch.face), key)
                else:  # windows drawn by (seed, step): a resumed run draws the same ones
                    rows = np.random.default_rng([int(config.seed), i]).choice(cache[0].shape[0], int(t.batch_size),
                                                                               replace=False)
                    state, metrics = trainer.dit_step(state, jnp.asarray(cache[0][rows]), jnp.asarray(cache[1][rows]),
                                                      key)
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                window_time += time.perf_counter() - tic
                i += 1
                if not np.isfinite(metrics["loss"]):
                    ckpt.wait()
                    raise TrainingError(f"tiny teacher: non-finite loss at step {i}; latest good checkpoint: step "
                                        f"{ckpt.latest_step()}")
                history.append(metrics["loss"])
                log.advance(i, metrics["loss"])
                if i % int(t.log_every) == 0 or i == steps:
                    n = i - window_start
                    frames = int(t.batch_size) * (int(tc.vae_frames) if i <= vae_steps else int(t.seq_len))
                    log.scalars(i, metrics, window_time / n, n * frames / max(window_time, 1e-9))
                    window_time, window_start = 0.0, i
                if t.checkpoint_every and i % int(t.checkpoint_every) == 0:
                    ckpt.save(i, state, extra())
            ckpt.save(i, state, extra(), force=True)
            ckpt.wait()
    vae_part, dit_part = history[:vae_steps], history[vae_steps:]
    summary = dict(
        kind="tiny teacher (synthetic-data teacher, not Wan2.1)", step=i, steps=steps, stopped=stopped or "done",
        losses=history, vae_loss_first=vae_part[0] if vae_part else None,
        vae_loss_final=float(np.mean(vae_part[-10:])) if len(vae_part) >= 10 and i >= vae_steps else None,
        dit_loss_first=float(np.mean(dit_part[:10])) if dit_part else None,
        dit_loss_final=float(np.mean(dit_part[-10:])) if dit_part else None,
        latent_mean=np.asarray(state["latent_mean"]).tolist(), latent_std=np.asarray(state["latent_std"]).tolist(),
        seconds=time.perf_counter() - start_time)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


ENCODE_CHUNK = 32


def encode_windows(trainer: TinyTeacherTrainer, state: dict, source) -> tuple[np.ndarray, np.ndarray]:
    """Every window of ``source`` through the VAE encoder: ``(latents (N, F, h, w, z), audio features
    (N, T, n_mels))`` as numpy (posterior means, not normalised). Fixed chunks: one compile."""
    n = len(source)
    lat, feats = [], []
    for start in range(0, n, ENCODE_CHUNK):
        rows = [source[min(j, n - 1)] for j in range(start, start + ENCODE_CHUNK)]  # the last chunk repeats
        frames = np.stack([r["frame"] for r in rows])
        audio = np.stack([r["audio"] for r in rows])
        z, f = trainer.encode(state["vae"], jnp.asarray(frames), jnp.asarray(audio))
        keep = min(ENCODE_CHUNK, n - start)
        lat.append(np.asarray(z)[:keep])
        feats.append(np.asarray(f)[:keep])
    return np.concatenate(lat), np.concatenate(feats)


def with_latent_stats(state: dict, latents: np.ndarray) -> dict:
    """Per-channel mean and std of the trained VAE's latents ``(N, F, h, w, z)`` (Wan's latent normalisation)."""
    m = latents.reshape(-1, latents.shape[-1]).astype(np.float64)
    return dict(state, latent_mean=jnp.asarray(m.mean(0), jnp.float32),
                latent_std=jnp.asarray(np.maximum(m.std(0), 1e-4), jnp.float32), stats_ready=jnp.ones((), jnp.bool_))


def load_tiny_teacher(workdir: str):
    """A trained tiny-teacher workdir -> ``(config, VideoTeacher, WanVAE, null_text (1, L, text_dim))``
    from its newest checkpoint (the VAE's spec carries the latent normalisation)."""
    from avatar_jax.errors import InputError
    from avatar_jax.train.checkpoint import CONFIG_FILE, Checkpointer

    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise InputError(f"{workdir!r} is not a tiny-teacher workdir (no {CONFIG_FILE}); train one with "
                         "`avatar-jax train --config configs/teacher_tiny.py --workdir DIR`")
    import ml_collections

    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    if not is_teacher_config(config):
        raise InputError(f"{workdir!r} holds a run of train.target={config.train.get('target', 'avatar')!r}, "
                         f"not a tiny teacher (train.target={TARGET!r})")
    trainer = trainer_for(config)
    with Checkpointer(workdir, config, fingerprint_keys=FINGERPRINT_KEYS) as ckpt:
        if ckpt.latest_step() is None:
            raise InputError(f"{workdir!r} holds no tiny-teacher checkpoint yet")
        state, _ = ckpt.restore(None, trainer.abstract_state())
    if not bool(state["stats_ready"]):
        raise InputError(f"{workdir!r}: the tiny teacher's run stopped before its DiT phase "
                         f"(step {int(state['step'])} of teacher.vae_steps={trainer.vae_steps}); resume it")
    teacher, vae = trainer.modules(state)
    return config, teacher, vae, trainer.null_text
