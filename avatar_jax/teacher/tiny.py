"""The tiny audio-driven video teacher (CPU-sized Wan2.1-architecture DiT + causal VAE + audio adapter),
built from ``config.teacher``. It is a synthetic-data teacher for tests and CPU experiments, not Wan2.1.

Its temporal packing follows its VAE: with ``vae_temporal`` downsampling by ``k`` the adapter packs ``k``
video frames per latent frame, so a clip of ``1 + k(F-1)`` frames gives ``F`` latent frames.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from avatar_jax.teacher import dit as dit_lib
from avatar_jax.teacher import schedules
from avatar_jax.teacher.audio_adapter import AudioAdapter
from avatar_jax.teacher.teacher import VideoTeacher
from avatar_jax.teacher.vae import WanVAE, WanVAESpec


def dit_spec(tc) -> dit_lib.WanDiTSpec:
    return dit_lib.WanDiTSpec(num_heads=int(tc.num_heads), head_dim=int(tc.head_dim), in_channels=int(tc.vae_z_dim),
                              out_channels=int(tc.vae_z_dim), text_dim=int(tc.text_dim), freq_dim=int(tc.freq_dim),
                              ffn_dim=int(tc.ffn_dim), num_layers=int(tc.num_layers), dtype=str(tc.dtype),
                              param_dtype=str(tc.dtype), remat=str(tc.remat))


def vae_spec(tc) -> WanVAESpec:
    return WanVAESpec(base_dim=int(tc.vae_base_dim), z_dim=int(tc.vae_z_dim), dim_mult=tuple(tc.vae_dim_mult),
                      num_res_blocks=1, temperal_downsample=tuple(tc.vae_temporal), dtype=str(tc.dtype))


def build(tc) -> tuple[VideoTeacher, WanVAE]:
    """``config.teacher`` -> ``(VideoTeacher with adapter on every block, WanVAE)``, freshly initialised."""
    spec, vspec = dit_spec(tc), vae_spec(tc)
    seed = int(tc.seed)
    adapter = AudioAdapter(int(tc.n_mels), spec.dim, tuple(range(spec.num_layers)), hidden=int(tc.adapter_hidden),
                           frames_per_latent=vspec.temporal_factor, rngs=nnx.Rngs(seed + 1))
    teacher = VideoTeacher(dit_lib.WanDiT(spec, rngs=nnx.Rngs(seed)), schedules.FlowMatching(), adapter)
    return teacher, WanVAE(vspec, rngs=nnx.Rngs(seed + 2))


def null_text(tc) -> jnp.ndarray:
    """The tiny teacher's prompt and empty prompt are both zeros ``(1, text_len, text_dim)``: it is
    conditioned on audio only (text guidance is then a no-op)."""
    return jnp.zeros((1, int(tc.text_len), int(tc.text_dim)), jnp.float32)
