"""Gated audio/text fusion (paper Sec. 3.2): the per-frame driving token ``D_t``.

    Ã_t = PE(t) ⊕ A_t
    γ_t = σ(w·Ã_t + b) ∈ [0, 1]
    D_t = γ_t · Proj_a(Ã_t) + (1 - γ_t) · Pool(Proj_z(Z))

``A (T, d_a)`` (or ``(B, T, d_a)``) are audio features at the video frame rate, ``PE(t)`` is a
sinusoidal encoding of the frame index ``t`` (plus ``frame_offset`` when a clip is processed in
windows), ``Z (L_z, d_z)`` the optional transcript embedding with a boolean mask, and Pool a masked
mean over the valid text tokens.

Without text the text branch is absent: ``D_t = Proj_a(Ã_t)``, i.e. γ is taken as 1 (the gate is
neither evaluated nor trained on such samples). A sample whose text mask is all False is treated the
same way. A module built with ``d_z=None`` has no text parameters at all and rejects text.

Parameters carry logical sharding axes (``"mlp"`` on the input features, ``"embed"`` on the model
width ``d``); ``eager_sharding=False`` so the module can be built without a mesh.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.errors import InputError


def _axes(*names: str | None) -> dict:
    return {"out_sharding": tuple(names), "eager_sharding": False}


def sinusoidal_encoding(positions: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """``positions (...,)`` -> ``(..., dim)``: ``[sin(p·ω_i), cos(p·ω_i)]``, ``ω_i = max_period^(-2i/dim)``."""
    if dim % 2:
        raise InputError(f"positional encoding dim must be even, got {dim}")
    freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(dim // 2, dtype=jnp.float32) / (dim // 2))
    angles = jnp.asarray(positions, jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class GatedFusion(nnx.Module):
    """``A (T, d_a)`` [+ ``Z (L_z, d_z)``, mask] -> ``D (T, d)``; batched inputs ``(B, ...)`` also work."""

    def __init__(self, d_a: int, d: int, d_z: int | None = None, pe_dim: int = 64, max_period: float = 10000.0,
                 *, rngs: nnx.Rngs):
        self.d_a, self.d, self.d_z, self.pe_dim, self.max_period = d_a, d, d_z, pe_dim, max_period
        d_in = d_a + pe_dim
        self.proj_a = nnx.Linear(d_in, d, rngs=rngs, kernel_metadata=_axes("mlp", "embed"),
                                 bias_metadata=_axes("embed"))
        if d_z is not None:
            self.gate = nnx.Linear(d_in, 1, rngs=rngs, kernel_metadata=_axes("mlp", None), bias_metadata=_axes(None))
            self.proj_z = nnx.Linear(d_z, d, rngs=rngs, kernel_metadata=_axes("mlp", "embed"),
                                     bias_metadata=_axes("embed"))

    def __call__(self, audio: jax.Array, text: jax.Array | None = None, text_mask: jax.Array | None = None,
                 frame_offset: int | jax.Array = 0, return_gate: bool = False):
        """Fuse. Returns ``D (..., T, d)``, and ``γ (..., T)`` too if ``return_gate``.

        Args:
          audio: ``(T, d_a)`` or ``(B, T, d_a)`` frame-rate audio features.
          text: ``(L_z, d_z)`` or ``(B, L_z, d_z)`` token embeddings, or None (no transcript).
          text_mask: ``(L_z,)`` / ``(B, L_z)`` bool, True for real tokens; None means all real.
          frame_offset: index of the first frame (PE of ``frame_offset + t``).
        """
        audio = jnp.asarray(audio)
        if audio.ndim not in (2, 3) or audio.shape[-1] != self.d_a:
            raise InputError(f"audio features must be (T, {self.d_a}) or (B, T, {self.d_a}), got {audio.shape}")
        unbatched = audio.ndim == 2
        if unbatched:
            audio = audio[None]
        batch, frames, _ = audio.shape
        pe = sinusoidal_encoding(frame_offset + jnp.arange(frames), self.pe_dim, self.max_period)
        a_tilde = jnp.concatenate([jnp.broadcast_to(pe, (batch, frames, self.pe_dim)).astype(audio.dtype), audio], -1)
        d_audio = self.proj_a(a_tilde)  # (B, T, d)

        if text is None:
            out, gate = d_audio, jnp.ones((batch, frames), d_audio.dtype)
        else:
            if self.d_z is None:
                raise InputError("this GatedFusion was built without a text branch (d_z=None) but text was given")
            text = jnp.asarray(text)
            if unbatched and text.ndim == 2:
                text = text[None]
            chex.assert_rank(text, 3)
            chex.assert_axis_dimension(text, 0, batch)
            chex.assert_axis_dimension(text, 2, self.d_z)
            if text_mask is None:
                mask = jnp.ones(text.shape[:2], bool)
            else:
                mask = jnp.asarray(text_mask, bool)
                if unbatched and mask.ndim == 1:
                    mask = mask[None]
                chex.assert_shape(mask, text.shape[:2])
            z = self.proj_z(text)  # (B, L, d)
            weight = mask[..., None].astype(z.dtype)
            count = weight.sum(axis=1, keepdims=True)  # (B, 1, 1)
            pooled = (z * weight).sum(axis=1, keepdims=True) / jnp.maximum(count, 1.0)
            gate = jax.nn.sigmoid(self.gate(a_tilde))  # (B, T, 1)
            gate = jnp.where(count > 0, gate, 1.0)  # no valid token: text branch absent for that sample
            out = gate * d_audio + (1.0 - gate) * pooled
            gate = gate[..., 0]

        if unbatched:
            out, gate = out[0], gate[0]
        return (out, gate) if return_gate else out
