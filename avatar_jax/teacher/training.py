"""Training the teacher (or only its audio adapter and LoRA) with the flow-matching objective.

    tau ~ logit-normal (or uniform), eps ~ N(0, I), x_tau = (1 - tau) x0 + tau eps
    loss = mean || v_hat(x_tau, tau, text, audio) - (eps - x0) ||^2

Conditions are dropped at random (text -> the null text, audio -> zeros) so that the same network also
predicts the unconditional velocities classifier-free guidance needs. ``trainable`` selects what learns:
:data:`ADAPTER_AND_LORA` (the DiT frozen: the OmniAvatar recipe) or ``nnx.Param`` (everything, e.g. the
tiny CPU teacher trained from scratch).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from avatar_jax.teacher import schedules
from avatar_jax.teacher.teacher import VideoTeacher

ADAPTER_AND_LORA = nnx.Any(nnx.LoRAParam, nnx.PathContains("adapter"))


class Batch(NamedTuple):
    latents: jax.Array  # (B, F, h, w, z), the DiT's normalised latent space
    text: jax.Array  # (B, L, text_dim)
    audio: jax.Array  # (B, 1 + 4(F - 1), C_audio)


def sample_tau(key: jax.Array, n: int, logit_normal: bool = True) -> jax.Array:
    """Noise levels for training: logit-normal (more weight mid-way, as SD3/Wan train) or uniform."""
    if logit_normal:
        return jax.nn.sigmoid(jax.random.normal(key, (n,)))
    return jax.random.uniform(key, (n,))


def flow_matching_loss(teacher: VideoTeacher, batch: Batch, null_text: jax.Array, key: jax.Array, *,
                       text_dropout: float = 0.1, audio_dropout: float = 0.2) -> jax.Array:
    """The velocity regression loss of a flow-matching teacher, with condition dropout."""
    b = batch.latents.shape[0]
    k_tau, k_eps, k_text, k_audio = jax.random.split(key, 4)
    tau = sample_tau(k_tau, b)
    eps = jax.random.normal(k_eps, batch.latents.shape)
    x_t = schedules.add_noise(teacher.schedule, batch.latents, eps, tau)
    keep_text = jax.random.uniform(k_text, (b, 1, 1)) >= text_dropout
    keep_audio = jax.random.uniform(k_audio, (b, 1, 1)) >= audio_dropout
    text = jnp.where(keep_text, batch.text, jnp.broadcast_to(null_text, batch.text.shape))
    audio = jnp.where(keep_audio, batch.audio, 0.0)
    pred = teacher.predict(x_t, tau, text, audio)
    return jnp.mean(jnp.square(pred - (eps - batch.latents)))


def make_optimizer(teacher: VideoTeacher, learning_rate: float = 1e-3, trainable=nnx.Param) -> nnx.Optimizer:
    return nnx.Optimizer(teacher, optax.adamw(learning_rate, weight_decay=0.0), wrt=trainable)


def make_train_step(trainable=nnx.Param, **loss_options):
    """A jitted ``(teacher, optimizer, batch, null_text, key) -> loss`` that updates ``trainable`` in place."""

    @nnx.jit
    def train_step(teacher, optimizer, batch, null_text, key):
        def loss_fn(model):
            return flow_matching_loss(model, batch, null_text, key, **loss_options)

        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, trainable))(teacher)
        optimizer.update(teacher, grads)
        return loss

    return train_step
