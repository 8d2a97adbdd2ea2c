"""The teacher as score distillation and the sampler see it: ``eps_hat(x_tau, tau, conditions)`` with
classifier-free guidance over text and audio.

A :class:`VideoTeacher` wraps a denoiser (the :class:`~avatar_jax.teacher.dit.WanDiT`, optionally with an
:class:`~avatar_jax.teacher.audio_adapter.AudioAdapter` and LoRA) and its :mod:`schedule
<avatar_jax.teacher.schedules>` (flow matching or epsilon). Latents are ``(B, F, h, w, z)`` in the DiT's
(normalised) latent space; ``text`` is ``(B, L, text_dim)``; ``audio`` is wav2vec2 features at the video
frame rate ``(B, 1 + 4(F - 1), C_audio)``.

Guidance (two conditions, the audio nested inside the text, as OmniAvatar guides):

    eps = eps(∅, ∅) + s_text · (eps(text, ∅) − eps(∅, ∅)) + s_audio · (eps(text, audio) − eps(text, ∅))

"∅" text is the empty prompt's embedding; "∅" audio is silence's features (or zeros). ``s = 1`` for both
gives the plain conditional prediction; the three evaluations run as one batch. Guidance is linear in the
prediction and every conversion to ``eps`` is affine in it, so guiding velocities or epsilons is the same.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.teacher import schedules
from avatar_jax.teacher.audio_adapter import AudioAdapter
from avatar_jax.teacher.dit import WanDiT


class Conditions(NamedTuple):
    """What the teacher is conditioned on; ``null_*`` are the unconditional stand-ins for guidance."""

    text: jax.Array  # (B, L, text_dim)
    null_text: jax.Array  # (B, L, text_dim) or (1, L, text_dim)
    audio: jax.Array | None = None  # (B, T_video, C_audio)
    null_audio: jax.Array | None = None  # same shape as audio; zeros when None
    reference: jax.Array | None = None  # (B, 1, h, w, z): the reference photo's latent (first latent frame)


def with_reference(latents: jax.Array, reference: jax.Array | None) -> jax.Array:
    """Put the clean reference latent ``(B, 1, h, w, z)`` in the first latent frame (OmniAvatar-style
    identity conditioning: the model sees the photo as frame 0 and continues it)."""
    if reference is None:
        return latents
    return jnp.concatenate([reference.astype(latents.dtype), latents[:, 1:]], axis=1)


class VideoTeacher(nnx.Module):
    """``dit`` (+ ``adapter``) and a schedule; :meth:`epsilon` is the ``s_psi`` of Eq. 9."""

    def __init__(self, dit: WanDiT, schedule: schedules.Schedule | None = None, adapter: AudioAdapter | None = None):
        self.dit = dit
        self.schedule = schedule if schedule is not None else schedules.FlowMatching()
        self.adapter = adapter

    def predict(self, x_t: jax.Array, tau: jax.Array, text: jax.Array, audio: jax.Array | None = None) -> jax.Array:
        """The network's raw output (velocity or epsilon) for ``x_t (B, F, h, w, z)`` at ``tau (B,)``."""
        offsets = None
        if self.adapter is not None and audio is not None:
            offsets = self.adapter(audio, self.dit.grid(x_t.shape[1:4]))
        t = self.schedule.timestep(jnp.broadcast_to(tau, x_t.shape[:1]))
        return self.dit(x_t, t, text, token_offsets=offsets)

    def guided_prediction(self, x_t: jax.Array, tau: jax.Array, cond: Conditions, text_scale: float = 1.0,
                          audio_scale: float = 1.0) -> jax.Array:
        """Classifier-free guided raw prediction (see the module docstring), one batched network call."""
        b = x_t.shape[0]
        tau = jnp.broadcast_to(tau, (b,))
        x_t = with_reference(x_t, cond.reference)
        null_text = jnp.broadcast_to(cond.null_text, (b, *cond.null_text.shape[1:]))
        if cond.null_text.shape[1] != cond.text.shape[1]:
            raise ValueError(f"text and null text lengths differ: {cond.text.shape} vs {cond.null_text.shape}")
        texts = jnp.concatenate([null_text, cond.text, cond.text])
        audio = None
        if cond.audio is not None:
            null_audio = jnp.zeros_like(cond.audio) if cond.null_audio is None else cond.null_audio
            audio = jnp.concatenate([null_audio, null_audio, cond.audio])
        pred = self.predict(jnp.concatenate([x_t] * 3), jnp.concatenate([tau] * 3), texts, audio)
        uncond, text_only, full = pred[:b], pred[b:2 * b], pred[2 * b:]
        return uncond + text_scale * (text_only - uncond) + audio_scale * (full - text_only)

    def epsilon(self, x_t: jax.Array, tau: jax.Array, cond: Conditions, text_scale: float = 1.0,
                audio_scale: float = 1.0) -> jax.Array:
        """``eps_hat(x_tau, tau, c)`` (guided) for score distillation, whatever the teacher predicts."""
        pred = self.guided_prediction(x_t, tau, cond, text_scale, audio_scale)
        return schedules.to_epsilon(self.schedule, pred, x_t, _per_sample(tau, x_t))

    def x0(self, x_t: jax.Array, tau: jax.Array, cond: Conditions, text_scale: float = 1.0,
           audio_scale: float = 1.0) -> jax.Array:
        pred = self.guided_prediction(x_t, tau, cond, text_scale, audio_scale)
        return schedules.to_x0(self.schedule, pred, x_t, _per_sample(tau, x_t))


def _per_sample(tau: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(tau, jnp.float32), x.shape[:1])
