"""Flow-matching training of the teacher: the frozen-DiT recipe updates only adapter and LoRA; a tiny
teacher trained on a synthetic audio -> latent task samples latents that follow the audio (and do not
when the audio is dropped)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.teacher import dit, sampler, schedules, training
from avatar_jax.teacher.audio_adapter import AudioAdapter
from avatar_jax.teacher.teacher import Conditions, VideoTeacher

F, H, W, Z, C = 3, 4, 4, 4, 6
PATTERN = jax.random.normal(jax.random.key(100), (H, W, Z))
PATTERN = PATTERN / jnp.linalg.norm(PATTERN) * 8


def _batch(key, b):
    """Audio whose first channel is a per-video-frame "opening" in [0, 1]; the latent of frame f is a fixed
    spatial pattern scaled by the mean opening of the video frames it encodes (1 for f = 0, 4 after)."""
    k1, k2 = jax.random.split(key)
    opening = jax.random.uniform(k1, (b, 1 + 4 * (F - 1)))
    audio = jnp.concatenate([opening[..., None], 0.1 * jax.random.normal(k2, (b, opening.shape[1], C - 1))], -1)
    amp = jnp.stack([opening[:, 0]] + [opening[:, 1 + 4 * (f - 1):1 + 4 * f].mean(1) for f in range(1, F)], 1)
    latents = (amp[:, :, None, None, None] - 0.5) * PATTERN[None, None] / 2
    return training.Batch(latents, jnp.zeros((b, 2, 8)), audio), amp


def _teacher(lora=False):
    spec = dit.WanDiTSpec(num_heads=2, head_dim=12, in_channels=Z, out_channels=Z, text_dim=8, freq_dim=16,
                          ffn_dim=32, num_layers=2)
    model = dit.WanDiT(spec, rngs=nnx.Rngs(0))
    if lora:
        dit.add_lora(model, 2, rngs=nnx.Rngs(2))
    return VideoTeacher(model, schedules.FlowMatching(), AudioAdapter(C, spec.dim, (0, 1), hidden=16,
                                                                      rngs=nnx.Rngs(1)))


def test_frozen_dit_recipe_updates_only_adapter_and_lora():
    teacher = _teacher(lora=True)
    before = nnx.state(teacher, nnx.Param)
    before = jax.tree.map(np.asarray, before)
    opt = training.make_optimizer(teacher, 1e-2, training.ADAPTER_AND_LORA)
    step = training.make_train_step(training.ADAPTER_AND_LORA)
    batch, _ = _batch(jax.random.key(0), 4)
    for i in range(2):
        loss = step(teacher, opt, batch, jnp.zeros((1, 2, 8)), jax.random.key(i))
    assert np.isfinite(float(loss))
    after = nnx.to_flat_state(nnx.state(teacher, nnx.Param))
    old = dict(nnx.to_flat_state(before))
    changed = {"/".join(map(str, p)) for p, v in after if not np.array_equal(np.asarray(v[...]), old[p][...])}
    assert changed and all(p.startswith("adapter") or "lora" in p for p in changed)
    assert any("block_proj" in p for p in changed) and any("lora" in p for p in changed)


@pytest.mark.slow
def test_tiny_teacher_learns_the_audio_and_guidance_sharpens_it():
    teacher = _teacher()
    opt = training.make_optimizer(teacher, 5e-3)
    step = training.make_train_step()
    null = jnp.zeros((1, 2, 8))
    losses = []
    for i in range(400):
        batch, _ = _batch(jax.random.key(i), 16)
        losses.append(float(step(teacher, opt, batch, null, jax.random.key(10_000 + i))))
    assert np.mean(losses[-50:]) < 0.3 * np.mean(losses[:10])
    held_out, amp = _batch(jax.random.key(99_999), 32)
    noise = jax.random.normal(jax.random.key(5), held_out.latents.shape)

    def correlation(audio, audio_scale):
        cond = Conditions(text=held_out.text, null_text=null, audio=audio)
        out = nnx.jit(lambda t, n: sampler.sample(t, n, cond, num_steps=10, shift=1.0, text_scale=1.0,
                                                  audio_scale=audio_scale))(teacher, noise)
        opening = jnp.einsum("bfhwz,hwz->bf", out, PATTERN) / jnp.sum(PATTERN ** 2)
        return float(np.corrcoef(np.asarray(opening).ravel(), np.asarray(amp).ravel())[0, 1])

    plain, guided = correlation(held_out.audio, 1.0), correlation(held_out.audio, 3.0)
    dropped = correlation(jnp.zeros_like(held_out.audio), 1.0)
    # measured: 0.82 (guidance 1), 0.95 (audio guidance 3), 0.00 with the audio dropped
    assert plain > 0.6 and guided > max(plain, 0.85) and abs(dropped) < 0.3, (plain, guided, dropped)
