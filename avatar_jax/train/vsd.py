"""Video score distillation (paper Eq. 9): the frozen video teacher's gradient on the rendered frames.

    I (B,T,H,W,3) in [0,1] ──► VAE encode (mean, normalised) ──► z (B,F,h,w,c)
    tau ~ U[tau_min, tau_max], eps ~ N(0,I), x = alpha(tau) z + sigma(tau) eps     (the teacher's schedule)
    g_z = w(tau) (eps_hat(x, tau, c) - eps) / z.size                            (CFG over text and audio)
    g_I = (dz/dI)^T g_z                                                          (one VJP through the encoder)

Variational form (``VSDSettings.variational``, VSD as in ProlificDreamer): ``eps`` in ``g_z`` is replaced by
``eps_phi(x, tau, c)``, the score of the *student's* render distribution: the teacher's network with LoRA
(rank ``lora_rank``) on every attention projection, the only part of it that learns. Each step updates the LoRA
by one AdamW step (``lora_lr``) on the denoising loss ``mean(w_fm (eps_phi(x', tau') - eps')^2)`` of the
stop-gradient render latents at a fresh ``tau'``, ``eps'``. The LoRA starts at zero, so at the first step
``eps_phi`` is the teacher's unguided ``eps_hat``; the update is :meth:`Distiller.update_score`, its state a
:class:`ScoreState` the step takes and returns.

The avatar receives ``g_I`` through the stop-gradient surrogate ``sum(sg(g_z) * z(I(Phi)))``: its gradient
w.r.t. the student parameters is ``E[w (eps_hat - eps) dz/dPhi]``, Eq. 9 in the teacher's latent space (the
teacher is a latent model, so ``x_tau`` noises the frames' latents). The teacher network itself is never
differentiated and carries no optimiser state; its parameters enter the jitted step as an argument sharded
FSDP x tensor-parallel (:func:`teacher_shardings`).

:func:`frame_gradient` is the pure function; :class:`Distiller` binds the teacher's graph definitions and
settings and hands :func:`avatar_jax.train.losses.vsd_term` its ``teacher_gradient`` hook.
"""

from __future__ import annotations

import dataclasses
import os

import chex
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from avatar_jax.audio import features as audio_features
from avatar_jax.errors import ConfigError
from avatar_jax.teacher import schedules
from avatar_jax.teacher.dit import add_lora
from avatar_jax.teacher.teacher import Conditions
from avatar_jax.train import sharding

WEIGHTINGS = ("uniform", "sigma2", "snr")


@dataclasses.dataclass(frozen=True)
class VSDSettings:
    """Static settings (hashable): noise range, guidance scales, ``w(tau)``, the teacher's audio features."""

    tau_min: float = 0.02
    tau_max: float = 0.98
    text_scale: float = 1.0
    audio_scale: float = 1.0
    weighting: str = "sigma2"  # uniform: w=1 | sigma2: w=sigma^2 (DreamFusion) | snr: w=sigma/alpha (x0 error)
    n_mels: int = 8  # teacher audio features: log-mel bands at the video frame rate
    fps: float = 25.0
    seed: int = 0
    variational: bool = False  # eps -> eps_phi, a LoRA score of the student's renders trained alongside
    lora_rank: int = 4
    lora_lr: float = 1e-3

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"vsd.weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if not 0.0 < self.tau_min <= self.tau_max < 1.0:
            raise ConfigError(f"vsd needs 0 < tau_min <= tau_max < 1, got {self.tau_min}, {self.tau_max}")
        if self.variational and (self.lora_rank < 1 or not self.lora_lr > 0):
            raise ConfigError(f"variational vsd needs lora_rank >= 1 and lora_lr > 0, got {self.lora_rank}, "
                              f"{self.lora_lr}")


def weight(schedule: schedules.Schedule, tau: jax.Array, weighting: str) -> jax.Array:
    """``w(tau)`` per sample ``(B,)``."""
    if weighting == "uniform":
        return jnp.ones_like(tau)
    if weighting == "sigma2":
        return jnp.square(schedule.sigma(tau))
    return schedule.sigma(tau) / schedule.alpha(tau)


def teacher_audio(audio: jax.Array, num_frames: int, n_mels: int, fps: float) -> jax.Array:
    """Raw 16 kHz audio ``(B, A)`` -> the teacher's conditioning features ``(B, num_frames, n_mels)``:
    log-mel bands averaged over each video frame's window (what the tiny teacher is trained on)."""
    def one(a):
        mel = audio_features.log_mel_spectrogram(a, n_mels)
        return audio_features.to_frame_rate(mel, audio_features.MEL_RATE, fps, num_frames,
                                            audio_features.MEL_OFFSET_S)

    return jax.vmap(one)(audio.astype(jnp.float32))


def frame_gradient(teacher, vae, rendered: jax.Array, cond: Conditions, key: jax.Array,
                   settings: VSDSettings, score=None) -> jax.Array:
    """Eq. 9's gradient on ``rendered (B,T,H,W,3)`` in [0,1] -> ``(B,T,H,W,3)``, the VJP of
    ``w (eps_hat - eps) / z.size`` through the encoder (see the module docstring).

    ``teacher`` has ``.schedule`` and ``.epsilon(x, tau, cond, text_scale, audio_scale)``; ``vae`` has
    ``latent_mean`` and ``normalize``. Frames past ``1 + k(T-1)//k`` (the VAE's usable count) get 0.
    ``score`` (variational form): a network like ``teacher`` whose unguided epsilon replaces ``eps``.
    """
    chex.assert_rank(rendered, 5)
    b = rendered.shape[0]
    rendered = jax.lax.stop_gradient(rendered)
    z, vjp = jax.vjp(lambda frames: vae.normalize(vae.latent_mean(frames * 2.0 - 1.0)), rendered)
    k_tau, k_eps = jax.random.split(key)
    tau = jax.random.uniform(k_tau, (b,), minval=settings.tau_min, maxval=settings.tau_max)
    eps = jax.random.normal(k_eps, z.shape, z.dtype)
    x = schedules.add_noise(teacher.schedule, z, eps, tau).astype(z.dtype)
    eps_hat = teacher.epsilon(x, tau, cond, settings.text_scale, settings.audio_scale).astype(jnp.float32)
    w = weight(teacher.schedule, tau, settings.weighting).reshape((b,) + (1,) * (z.ndim - 1))
    baseline = eps if score is None else score_epsilon(score, x, tau, cond).astype(jnp.float32)
    g_z = jax.lax.stop_gradient(w * (eps_hat - baseline) / z.size)
    (g,) = vjp(g_z.astype(z.dtype))
    return g.astype(jnp.float32)


def score_epsilon(score, x: jax.Array, tau: jax.Array, cond: Conditions) -> jax.Array:
    """The variational score's ``eps_phi(x (B,F,h,w,z), tau (B,), c)``: one conditional pass, no guidance."""
    if cond.reference is not None:
        raise ValueError("variational vsd: a reference-frame condition is not supported by the LoRA score")
    pred = score.predict(x, tau, cond.text, cond.audio)
    return schedules.to_epsilon(score.schedule, pred, x, jnp.broadcast_to(tau, x.shape[:1]))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ScoreState:
    """The variational form's trainable part: the LoRA score's parameters (``nnx.LoRAParam`` state) and their
    AdamW state. The teacher's own parameters stay in :class:`TeacherParams`, frozen."""

    lora: nnx.State
    opt_state: optax.OptState


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TeacherParams:
    """What the step reads of the frozen teacher: the denoiser (DiT + adapter) and VAE states, the text
    ``(1, L, text_dim)`` the clips are described by and the empty prompt ``(1, L, text_dim)``."""

    denoiser: nnx.State
    vae: nnx.State
    text: jax.Array
    null_text: jax.Array


@dataclasses.dataclass(frozen=True)
class Distiller:
    """The teacher's graph definitions and settings; :meth:`hook` gives ``losses.vsd_term`` its gradient."""

    denoiser_def: nnx.GraphDef
    vae_def: nnx.GraphDef
    settings: VSDSettings
    score_def: nnx.GraphDef | None = None  # variational: the denoiser with LoRA (merged with its LoRA state)

    @property
    def variational(self) -> bool:
        return self.score_def is not None

    def _conditions(self, params: TeacherParams, vae, audio: jax.Array, rendered_shape) -> Conditions:
        b, t = rendered_shape[:2]
        usable = 1 + vae.spec.temporal_factor * ((t - 1) // vae.spec.temporal_factor)
        feats = teacher_audio(audio, t, self.settings.n_mels, self.settings.fps)[:, :usable]
        text = jnp.broadcast_to(params.text, (b, *params.text.shape[1:]))
        return Conditions(text=text, null_text=params.null_text, audio=feats)

    def score_model(self, params: TeacherParams, score: ScoreState):
        """The variational score network: the frozen teacher's weights plus the LoRA in ``score``."""
        return nnx.merge(self.score_def, score.lora, params.denoiser)

    def hook(self, params: TeacherParams, audio: jax.Array, step: jax.Array, score: ScoreState | None = None):
        """``rendered (B,T,H,W,3) -> g`` scaled so that ``vsd_term``'s ``sum(g * rendered) / size`` has the
        gradient :func:`frame_gradient`; noise and ``tau`` come from ``(settings.seed, step)``. The variational
        form needs ``score`` (its ``eps_phi`` replaces ``eps``)."""
        if self.variational != (score is not None):
            raise ValueError("variational vsd needs the ScoreState (and plain vsd none)")
        key = jax.random.fold_in(jax.random.key(self.settings.seed), step)

        def teacher_gradient(rendered):
            teacher = nnx.merge(self.denoiser_def, params.denoiser)
            vae = nnx.merge(self.vae_def, params.vae)
            cond = self._conditions(params, vae, audio, rendered.shape)
            phi = None if score is None else self.score_model(params, score)
            return frame_gradient(teacher, vae, rendered, cond, key, self.settings, phi) * rendered.size

        return teacher_gradient

    def score_optimizer(self) -> optax.GradientTransformation:
        return optax.adamw(self.settings.lora_lr, weight_decay=0.0)

    def init_score(self, lora: nnx.State) -> ScoreState:
        return ScoreState(lora, self.score_optimizer().init(lora))

    def update_score(self, params: TeacherParams, score: ScoreState, rendered: jax.Array, audio: jax.Array,
                     step: jax.Array) -> tuple[ScoreState, jax.Array]:
        """One AdamW step of the LoRA score on the denoising loss of the (stop-gradient) render latents
        ``rendered (B,T,H,W,3)``, at a fresh ``tau'``, ``eps'`` -> ``(new ScoreState, loss before the step)``.

        The loss is in epsilon space, ``mean((eps_phi(x', tau') - eps')^2)``, for any teacher schedule."""
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.settings.seed), step), 1)
        vae = nnx.merge(self.vae_def, params.vae)
        rendered = jax.lax.stop_gradient(rendered)
        z = jax.lax.stop_gradient(vae.normalize(vae.latent_mean(rendered * 2.0 - 1.0)))
        cond = self._conditions(params, vae, audio, rendered.shape)
        k_tau, k_eps = jax.random.split(key)
        tau = jax.random.uniform(k_tau, z.shape[:1], minval=self.settings.tau_min, maxval=self.settings.tau_max)
        eps = jax.random.normal(k_eps, z.shape, z.dtype)

        def loss_fn(lora):
            phi = nnx.merge(self.score_def, lora, params.denoiser)
            x = schedules.add_noise(phi.schedule, z, eps, tau).astype(z.dtype)
            return jnp.mean(jnp.square(score_epsilon(phi, x, tau, cond).astype(jnp.float32) - eps))

        loss, grads = jax.value_and_grad(loss_fn)(score.lora)
        updates, opt_state = self.score_optimizer().update(grads, score.opt_state, score.lora)
        return ScoreState(optax.apply_updates(score.lora, updates), opt_state), loss


def fold_lora(teacher) -> None:
    """Fold every attention LoRA of ``teacher.dit`` into its projection kernels, in place (same function):
    the variational score then adds its own LoRA in the freed slots."""
    for block in teacher.dit.blocks:
        for attn in (block.attn1, block.attn2):
            if attn.lora is None:
                continue
            for name, lora in attn.lora.items():
                dense = getattr(attn, name)
                delta = (lora.a[...].astype(jnp.float32) @ lora.b[...].astype(jnp.float32)) * lora.scaling
                dense.kernel[...] = (dense.kernel[...].astype(jnp.float32) + delta).astype(dense.kernel.dtype)
            attn.lora = None


def split_teacher(teacher, vae, text: jax.Array, null_text: jax.Array, settings: VSDSettings
                  ) -> tuple[Distiller, TeacherParams]:
    """Modules -> ``(Distiller, TeacherParams)``: the frozen parts the jitted step takes as an argument.

    Variational settings: a teacher with attention LoRA has it folded into its kernels (``teacher`` changes in
    place), and the Distiller gets the graph of a LoRA score; :func:`init_score` gives its first state."""
    score_def = None
    if settings.variational:
        fold_lora(teacher)
        score = nnx.clone(teacher)
        add_lora(score.dit, settings.lora_rank, rngs=nnx.Rngs(settings.seed + 17))
        score_def = nnx.split(score, nnx.LoRAParam, ...)[0]
    denoiser_def, denoiser = nnx.split(teacher)
    vae_def, vae_state = nnx.split(vae)
    return (Distiller(denoiser_def, vae_def, settings, score_def),
            TeacherParams(denoiser, vae_state, text, null_text))


def init_score(teacher, distiller: Distiller) -> ScoreState:
    """The LoRA score's first state for ``teacher`` (after :func:`split_teacher`): ``A`` random, ``B`` zero, so
    ``eps_phi`` starts as the teacher's unguided epsilon."""
    if not distiller.variational:
        raise ValueError("init_score: the distiller is not variational (vsd.variational=false)")
    score = nnx.clone(teacher)
    add_lora(score.dit, distiller.settings.lora_rank, rngs=nnx.Rngs(distiller.settings.seed + 17))
    return distiller.init_score(nnx.state(score, nnx.LoRAParam))


def score_shardings(mesh, distiller: Distiller, score: ScoreState) -> ScoreState:
    """The LoRA follows its logical axes (``embed``/``heads``); AdamW's moments follow their parameters."""
    lora = sharding.state_shardings(mesh, score.lora)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt = optax.tree_map_params(distiller.score_optimizer(), lambda _, s: s, score.opt_state, lora,
                                transform_non_params=lambda _: replicated,
                                is_leaf=lambda x: isinstance(x, nnx.Variable))
    return ScoreState(lora, opt)


def teacher_shardings(mesh, params: TeacherParams) -> TeacherParams:
    """FSDP x tensor-parallel for every annotated teacher parameter (``embed`` -> fsdp, ``heads``/``mlp`` ->
    model, by the one rules table); unannotated ones (VAE convs, norms) and the text replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    return TeacherParams(sharding.state_shardings(mesh, params.denoiser), sharding.state_shardings(mesh, params.vae),
                         replicated, replicated)


def lower_frame_gradient(distiller: Distiller, params, shardings: TeacherParams, mesh, frames_shape: tuple[int, ...],
                         audio_samples: int):
    """``jax.jit(...).lower`` of the teacher side of the distillation step (encode, noise, guided eps-hat,
    VJP to the frames) for ``frames (B,T,H,W,3)`` and ``audio (B,audio_samples)`` split over the batch axes.

    ``params`` may be abstract (``jax.ShapeDtypeStruct``s from ``nnx.eval_shape``): nothing is materialised,
    so ``.compile()`` gives per-device memory and FLOPs of a 14B teacher on any (simulated) mesh.
    """
    batch = NamedSharding(mesh, sharding.logical_to_mesh_spec(("batch",)))
    frames_sh = NamedSharding(mesh, sharding.fit_spec(mesh, batch.spec, frames_shape))
    audio_sh = NamedSharding(mesh, sharding.fit_spec(mesh, batch.spec, (frames_shape[0], audio_samples)))

    def fn(p, frames, audio, step):
        return distiller.hook(p, audio, step)(frames)

    jitted = jax.jit(fn, in_shardings=(shardings, frames_sh, audio_sh, NamedSharding(mesh, PartitionSpec())),
                     out_shardings=frames_sh)
    return jitted.lower(params, jax.ShapeDtypeStruct(frames_shape, jnp.float32),
                        jax.ShapeDtypeStruct((frames_shape[0], audio_samples), jnp.float32),
                        jax.ShapeDtypeStruct((), jnp.int32))


@dataclasses.dataclass(frozen=True)
class LoadedTeacher:
    """What the training loop needs to distil from a teacher: the Distiller, its parameters placed on the mesh
    with their shardings and, in the variational form, the LoRA score's first state and shardings."""

    distiller: Distiller
    params: TeacherParams
    shardings: TeacherParams
    score: ScoreState | None
    score_shardings: ScoreState | None
    description: str


def settings_from_config(config, n_mels: int, fps: float) -> VSDSettings:
    """``config.vsd`` -> :class:`VSDSettings`; the audio features follow the teacher (its ``n_mels``, fps)."""
    v = config.vsd
    return VSDSettings(tau_min=float(v.tau_min), tau_max=float(v.tau_max), text_scale=float(v.text_scale),
                       audio_scale=float(v.audio_scale), weighting=str(v.weighting), n_mels=int(n_mels), fps=float(fps),
                       seed=int(v.seed), variational=bool(v.get("variational", False)),
                       lora_rank=int(v.get("lora_rank", 4)), lora_lr=float(v.get("lora_lr", 1e-3)))


def load_teacher(config, mesh) -> LoadedTeacher:
    """``config.vsd.teacher`` (a tiny-teacher workdir, ``avatar-jax train --config configs/teacher_tiny.py``) ->
    :class:`LoadedTeacher` on ``mesh``. The teacher's audio features (``n_mels``) and frame rate come from its
    own config, which must match the student's ``data.fps``."""
    from avatar_jax.errors import InputError

    path = str(config.vsd.teacher)
    if not path:
        raise ConfigError("loss.vsd > 0 needs a teacher: set vsd.teacher to a tiny-teacher workdir "
                          "(avatar-jax train --config configs/teacher_tiny.py --workdir DIR), or loss.vsd=0")
    if not os.path.isdir(path):
        raise InputError(f"vsd.teacher={path!r} is not a directory (expected a tiny-teacher workdir)")
    from avatar_jax.teacher.tiny_training import load_tiny_teacher

    tconfig, teacher, vae, null_text = load_tiny_teacher(path)
    if abs(float(tconfig.data.fps) - float(config.data.fps)) > 1e-6:
        raise ConfigError(f"vsd.teacher was trained at {tconfig.data.fps} fps, the student's clips are at "
                          f"{config.data.fps} fps; they must match")
    settings = settings_from_config(config, int(tconfig.teacher.n_mels), float(tconfig.data.fps))
    distiller, params = split_teacher(teacher, vae, null_text, null_text, settings)
    shardings = teacher_shardings(mesh, params)
    params = jax.device_put(params, shardings)
    score = score_sh = None
    if distiller.variational:
        score = init_score(teacher, distiller)
        score_sh = score_shardings(mesh, distiller, score)
        score = jax.device_put(score, score_sh)
    kind = "variational (LoRA score)" if distiller.variational else "score distillation"
    return LoadedTeacher(distiller, params, shardings, score, score_sh, f"tiny teacher {path!r}, {kind}")


# ---------------------------------------------------------------- with vs without VSD: train/vsd_compare.py
