"""Video score distillation (paper Eq. 9): the frozen video teacher's gradient on the rendered frames.

    I (B,T,H,W,3) in [0,1] ──► VAE encode (mean, normalised) ──► z (B,F,h,w,c)
    tau ~ U[tau_min, tau_max], eps ~ N(0,I), x = alpha(tau) z + sigma(tau) eps     (the teacher's schedule)
    g_z = w(tau) (eps_hat(x, tau, c) - eps) / z.size                            (CFG over text and audio)
    g_I = (dz/dI)^T g_z                                                          (one VJP through the encoder)

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

import chex
import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from avatar_jax.audio import features as audio_features
from avatar_jax.errors import ConfigError
from avatar_jax.teacher import schedules
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

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"vsd.weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if not 0.0 < self.tau_min <= self.tau_max < 1.0:
            raise ConfigError(f"vsd needs 0 < tau_min <= tau_max < 1, got {self.tau_min}, {self.tau_max}")


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
                   settings: VSDSettings) -> jax.Array:
    """Eq. 9's gradient on ``rendered (B,T,H,W,3)`` in [0,1] -> ``(B,T,H,W,3)``, the VJP of
    ``w (eps_hat - eps) / z.size`` through the encoder (see the module docstring).

    ``teacher`` has ``.schedule`` and ``.epsilon(x, tau, cond, text_scale, audio_scale)``; ``vae`` has
    ``latent_mean`` and ``normalize``. Frames past ``1 + k(T-1)//k`` (the VAE's usable count) get 0.
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
    g_z = jax.lax.stop_gradient(w * (eps_hat - eps) / z.size)
    (g,) = vjp(g_z.astype(z.dtype))
    return g.astype(jnp.float32)


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

    def hook(self, params: TeacherParams, audio: jax.Array, step: jax.Array):
        """``rendered (B,T,H,W,3) -> g`` scaled so that ``vsd_term``'s ``sum(g * rendered) / size`` has the
        gradient :func:`frame_gradient`; noise and ``tau`` come from ``(settings.seed, step)``."""
        key = jax.random.fold_in(jax.random.key(self.settings.seed), step)

        def teacher_gradient(rendered):
            teacher = nnx.merge(self.denoiser_def, params.denoiser)
            vae = nnx.merge(self.vae_def, params.vae)
            t = rendered.shape[1]
            usable = 1 + vae.spec.temporal_factor * ((t - 1) // vae.spec.temporal_factor)
            feats = teacher_audio(audio, t, self.settings.n_mels, self.settings.fps)[:, :usable]
            b = rendered.shape[0]
            text = jnp.broadcast_to(params.text, (b, *params.text.shape[1:]))
            cond = Conditions(text=text, null_text=params.null_text, audio=feats)
            return frame_gradient(teacher, vae, rendered, cond, key, self.settings) * rendered.size

        return teacher_gradient


def split_teacher(teacher, vae, text: jax.Array, null_text: jax.Array, settings: VSDSettings
                  ) -> tuple[Distiller, TeacherParams]:
    """Modules -> ``(Distiller, TeacherParams)``: the frozen parts the jitted step takes as an argument."""
    denoiser_def, denoiser = nnx.split(teacher)
    vae_def, vae_state = nnx.split(vae)
    return (Distiller(denoiser_def, vae_def, settings),
            TeacherParams(denoiser, vae_state, text, null_text))


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
