"""Audio adapter (OmniAvatar-style): wav2vec2 features -> tokens added to the DiT's latent tokens.

    features (B, T, C) at the video frame rate, T = 1 + 4(F - 1)
      ──► pack per latent frame: the first frame is repeated 3 times in front, then groups of 4 frames
          (the VAE's temporal causality: latent 0 <- frame 0, latent k <- frames 4k-3 .. 4k) ──► (B, F, 4C)
      ──► Linear + LayerNorm ──► (B, F, A)
      ──► per conditioned block i: Linear_i(A -> D), broadcast over the h'·w' tokens of each latent frame
      ──► {i: (B, N, D)} added to the tokens before block i (``WanDiT(token_offsets=...)``)

The per-block projections start at zero, so a fresh adapter leaves the DiT's output unchanged; with LoRA
on the DiT (:func:`avatar_jax.teacher.dit.add_lora`) it is what trains while the DiT stays frozen.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.audio.layers import axes
from avatar_jax.teacher.layers import LayerNorm, dense

FRAMES_PER_LATENT = 4


def pack_per_latent_frame(features: jax.Array, frames_per_latent: int = FRAMES_PER_LATENT) -> jax.Array:
    """``(B, 1 + k(F-1), C)`` -> ``(B, F, k·C)``: latent frame f gets the k video frames it encodes."""
    chex.assert_rank(features, 3)
    b, t, c = features.shape
    k = frames_per_latent
    if (t - 1) % k:
        raise ValueError(f"audio features cover {t} video frames; expected 1 + {k}·n (the VAE's frame count)")
    padded = jnp.concatenate([jnp.repeat(features[:, :1], k - 1, axis=1), features], axis=1)
    return padded.reshape(b, (t - 1) // k + 1, k * c)


class AudioAdapter(nnx.Module):
    """Audio features -> ``{block index: (B, N, D)}`` token offsets for the DiT."""

    def __init__(self, audio_dim: int, model_dim: int, layers: tuple[int, ...], *, hidden: int = 256,
                 frames_per_latent: int = FRAMES_PER_LATENT, rngs: nnx.Rngs):
        self.layers = tuple(layers)
        self.frames_per_latent = frames_per_latent
        self.proj = dense(frames_per_latent * audio_dim, hidden, None, "mlp", rngs=rngs)
        self.norm = LayerNorm(hidden, 1e-5, "mlp")
        self.block_proj = nnx.Dict({
            str(i): nnx.Linear(hidden, model_dim, kernel_init=jax.nn.initializers.zeros, rngs=rngs,
                               kernel_metadata=axes("mlp", "embed"), bias_metadata=axes("embed"))
            for i in self.layers
        })

    def __call__(self, features: jax.Array, grid: tuple[int, int, int]) -> dict[int, jax.Array]:
        """``features (B, T, C)``; ``grid`` = the DiT's token grid ``(F', H', W')`` (patch 1 in time)."""
        packed = pack_per_latent_frame(features.astype(jnp.float32), self.frames_per_latent)
        if packed.shape[1] != grid[0]:
            raise ValueError(f"audio gives {packed.shape[1]} latent frames, the latents have {grid[0]}")
        h = self.norm(jax.nn.silu(self.proj(packed)))  # (B, F, A)
        out = {}
        for i in self.layers:
            tok = self.block_proj[str(i)](h)  # (B, F, D)
            tok = jnp.broadcast_to(tok[:, :, None], (tok.shape[0], grid[0], grid[1] * grid[2], tok.shape[-1]))
            out[i] = tok.reshape(tok.shape[0], -1, tok.shape[-1])
        return out
