"""The embedded default audio encoder: Whisper log-mel -> conv front end -> local-attention transformer.

Needs no download: it starts from random weights and is trained together with the avatar. It follows
:class:`avatar_jax.audio.encoder.AudioEncoder`: ``audio (S,) @ 16 kHz -> (ceil((S // 160) / 2), dim)``
at 50 Hz, each output centred on ``i / 50`` s (``feature_offset_s = -0.01``).

Architecture (widths are arguments; defaults are small enough for CPU training):
  log-mel (100 Hz, n_mels) -> Conv1d k3 + GELU -> Conv1d k3 stride 2 + GELU (50 Hz)
  -> depthwise Conv1d k15 (relative position, residual) -> ``depth`` pre-norm transformer blocks
  -> LayerNorm -> Linear to ``dim``.
Attention is *block-local*: the sequence is cut into blocks of ``block`` frames (1.28 s at 64) and each
block attends to itself and its two neighbours, so cost and memory grow linearly with the audio
length (a 10-minute clip is 30000 frames; full attention would need 0.9 G scores per head).

Every parameter carries logical sharding axes (``out_sharding`` metadata, mapped to the mesh by
:data:`avatar_jax.train.sharding.LOGICAL_AXIS_RULES`); ``eager_sharding=False`` so modules can be
built without a mesh (the trainer places them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avatar_jax.audio.features import log_mel_spectrogram


def axes(*names: str | None) -> dict:
    """Variable metadata naming the logical axes of a parameter (no eager placement)."""
    return {"out_sharding": tuple(names), "eager_sharding": False}


def _linear(d_in, d_out, in_axis, out_axis, rngs):
    return nnx.Linear(d_in, d_out, rngs=rngs, kernel_metadata=axes(in_axis, out_axis),
                      bias_metadata=axes(out_axis))


def _norm(d, rngs):
    return nnx.LayerNorm(d, rngs=rngs, scale_metadata=axes("embed"), bias_metadata=axes("embed"))


def _blocks_with_neighbours(x: jax.Array, block: int) -> jax.Array:
    """``(nb, n, C)`` blocks -> ``(nb, 3n, C)``: previous, own and next block (zeros at the ends)."""
    pad = jnp.zeros_like(x[:1])
    prev = jnp.concatenate([pad, x[:-1]], axis=0)
    nxt = jnp.concatenate([x[1:], pad], axis=0)
    return jnp.concatenate([prev, x, nxt], axis=1)


class LocalSelfAttention(nnx.Module):
    """Multi-head self-attention restricted to a block and its two neighbours. ``(L, C) -> (L, C)``."""

    def __init__(self, width: int, heads: int, block: int, *, rngs: nnx.Rngs):
        assert width % heads == 0, (width, heads)
        self.heads, self.block = heads, block
        self.qkv = _linear(width, 3 * width, "embed", "heads", rngs)
        self.proj = _linear(width, width, "heads", "embed", rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        length, width = x.shape
        n = self.block
        nb = -(-length // n)
        q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        pad = nb * n - length

        def to_blocks(t):
            return jnp.pad(t, ((0, pad), (0, 0))).reshape(nb, n, self.heads, width // self.heads)

        q = to_blocks(q)
        k = _blocks_with_neighbours(to_blocks(k), n)  # (nb, 3n, H, Dh)
        v = _blocks_with_neighbours(to_blocks(v), n)
        # key position of each (block, slot) in the padded sequence; invalid outside [0, length)
        # (jnp, not np: ``length`` may be symbolic when the encoder is exported with jax.export)
        key_pos = (jnp.arange(nb)[:, None] - 1) * n + jnp.arange(3 * n)[None, :]
        valid = (key_pos >= 0) & (key_pos < length)  # (nb, 3n)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(width // self.heads)
        scores = jnp.where(valid[:, None, None, :], scores, -1e30)
        attn = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(nb * n, width)[:length]
        return self.proj(out)


class TransformerBlock(nnx.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``. ``(L, C) -> (L, C)``."""

    def __init__(self, width: int, heads: int, block: int, mlp_ratio: int, *, rngs: nnx.Rngs):
        self.norm1 = _norm(width, rngs)
        self.attn = LocalSelfAttention(width, heads, block, rngs=rngs)
        self.norm2 = _norm(width, rngs)
        self.fc1 = _linear(width, mlp_ratio * width, "embed", "mlp", rngs)
        self.fc2 = _linear(mlp_ratio * width, width, "mlp", "embed", rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x))))


class EmbeddedAudioEncoder(nnx.Module):
    """Default audio encoder, ``audio (S,) float32 @ 16 kHz -> (F, dim)`` at 50 Hz. See module docstring."""

    sample_rate = 16000
    feature_rate = 50.0
    feature_offset_s = -0.01  # output i is centred on i/50 s: its window starts 10 ms earlier

    def __init__(self, dim: int = 256, width: int = 192, depth: int = 2, heads: int = 4, n_mels: int = 80,
                 block: int = 64, mlp_ratio: int = 4, *, rngs: nnx.Rngs):
        self.dim, self.n_mels = dim, n_mels
        self.conv1 = nnx.Conv(n_mels, width, kernel_size=(3,), padding=((1, 1),), rngs=rngs,
                              kernel_metadata=axes(None, "conv_in", "conv_out"), bias_metadata=axes("conv_out"))
        self.conv2 = nnx.Conv(width, width, kernel_size=(3,), strides=(2,), padding=((1, 1),), rngs=rngs,
                              kernel_metadata=axes(None, "conv_in", "conv_out"), bias_metadata=axes("conv_out"))
        self.pos_conv = nnx.Conv(width, width, kernel_size=(15,), padding=((7, 7),), feature_group_count=width,
                                 rngs=rngs, kernel_metadata=axes(None, None, "conv_out"),
                                 bias_metadata=axes("conv_out"))
        self.blocks = nnx.List([TransformerBlock(width, heads, block, mlp_ratio, rngs=rngs) for _ in range(depth)])
        self.norm = _norm(width, rngs)
        self.out = _linear(width, dim, "embed", "mlp", rngs)

    def encode_mel(self, mel: jax.Array) -> jax.Array:
        """``mel (M, n_mels)`` at 100 Hz -> ``(ceil(M / 2), dim)`` at 50 Hz."""
        x = jax.nn.gelu(self.conv1(mel[None]))
        x = jax.nn.gelu(self.conv2(x))
        x = x + jax.nn.gelu(self.pos_conv(x))
        x = x[0]
        for blk in self.blocks:
            x = blk(x)
        return self.out(self.norm(x))

    def __call__(self, audio: jax.Array) -> jax.Array:
        """``audio (S,) float32`` at 16 kHz (S >= 201) -> ``(ceil((S // 160) / 2), dim)``."""
        return self.encode_mel(log_mel_spectrogram(audio, self.n_mels))

    @staticmethod
    def num_features(num_samples: int) -> int:
        return -(-(num_samples // 160) // 2)
