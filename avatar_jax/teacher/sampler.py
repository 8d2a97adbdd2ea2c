"""Sampling latents from a :class:`~avatar_jax.teacher.teacher.VideoTeacher`: deterministic steps from
pure noise (``tau = 1``) to data (``tau = 0``).

Every step is ``x' = alpha(tau') x0_hat + sigma(tau') eps_hat`` (DDIM form). For a flow-matching teacher
(``alpha = 1 - tau``, ``sigma = tau``) this is exactly the Euler step of the probability-flow ODE,
``x' = x + (tau' - tau) v_hat``; for an epsilon teacher it is DDIM. The last step returns ``x0_hat``.
The noise levels are Wan's shifted grid ``tau_i = shift s_i / (1 + (shift - 1) s_i)`` over uniform
``s_i`` from 1 to 0 (``shift = 1``: uniform).
The loop is a ``lax.fori_loop`` (one compiled step), guidance as in :meth:`VideoTeacher.guided_prediction`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.teacher import schedules
from avatar_jax.teacher.teacher import Conditions, VideoTeacher, with_reference


def noise_levels(num_steps: int, shift: float = 5.0) -> jax.Array:
    """``(num_steps + 1,)`` decreasing noise levels from 1 to 0."""
    return schedules.shift_sigmas(jnp.linspace(1.0, 0.0, num_steps + 1), shift)


def step(teacher: VideoTeacher, x: jax.Array, tau: jax.Array, tau_next: jax.Array, cond: Conditions,
         text_scale: float = 1.0, audio_scale: float = 1.0) -> jax.Array:
    """One deterministic step from ``tau`` to ``tau_next`` (scalars)."""
    pred = teacher.guided_prediction(x, tau, cond, text_scale, audio_scale)
    taus = jnp.broadcast_to(tau, x.shape[:1])
    eps = schedules.to_epsilon(teacher.schedule, pred, x, taus)
    x0 = schedules.to_x0(teacher.schedule, pred, x, taus)
    # the last step lands on x0_hat itself (alpha = 1, sigma = 0 at tau = 0; a VP schedule's tau = 0 is
    # its first training step, still slightly noisy, so the end point is taken as clean, like DDIM does)
    last = tau_next <= 0
    alpha = jnp.where(last, 1.0, teacher.schedule.alpha(tau_next))
    sigma = jnp.where(last, 0.0, teacher.schedule.sigma(tau_next))
    return alpha * x0 + sigma * eps


def sample(teacher: VideoTeacher, noise: jax.Array, cond: Conditions, *, num_steps: int = 20, shift: float = 5.0,
           text_scale: float = 5.0, audio_scale: float = 4.0) -> jax.Array:
    """Latents ``(B, F, h, w, z)`` (the DiT's normalised space) from ``noise`` of that shape.

    Defaults follow OmniAvatar's inference settings (text guidance 4.5–5, audio guidance ~4); for the tiny
    CPU teacher, lower scales work better. With ``cond.reference`` the first latent frame is the reference.
    """
    levels = noise_levels(num_steps, shift)
    graphdef, state = nnx.split(teacher)

    def body(i, x):
        model = nnx.merge(graphdef, state)
        return step(model, x, levels[i], levels[i + 1], cond, text_scale, audio_scale).astype(noise.dtype)

    x = jax.lax.fori_loop(0, num_steps, body, noise)
    return with_reference(x, cond.reference)


def decode_frames(vae, latents: jax.Array, *, chunk_frames: int | None = None) -> jax.Array:
    """Sampled latents (the DiT's normalised space) -> RGB frames ``(B, 1 + 4(F-1), H, W, 3)`` uint8.

    Undoes the latent normalisation, decodes with the causal VAE (optionally ``chunk_frames`` latent frames
    at a time) and maps [-1, 1] to [0, 255].
    """
    video = vae.decode(vae.denormalize(latents), chunk_frames=chunk_frames)
    return jnp.round((video + 1.0) * 127.5).astype(jnp.uint8)
