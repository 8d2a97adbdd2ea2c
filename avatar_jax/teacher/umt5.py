"""umT5 text encoder (transformers ``UMT5EncoderModel``) in Flax NNX: Wan2.1's text encoder (umT5-XXL).

    token ids (B, L) ──► embedding (B, L, D) ──► num_layers × [ RMS norm ─ self-attention with this layer's
        own relative-position bias (bucketed, bidirectional) ─ residual ; RMS norm ─ gated-GELU FFN ─ residual ]
        ──► RMS norm ──► (B, L, D)

Unlike T5, every umT5 layer has its own relative-attention bias table. Attention logits are not scaled
by ``1/sqrt(d_kv)`` (T5 folds that into the weights). Padded keys (``attention_mask`` 0) are never
attended to. The Wan pipeline then zeroes the states of padded tokens and pads to 512 tokens
(:func:`avatar_jax.teacher.text.pad_text_states`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.audio.layers import axes
from avatar_jax.errors import ConfigError
from avatar_jax.teacher.layers import RMSNorm, dense

_ACT = {"gelu_new": lambda x: jax.nn.gelu(x, approximate=True), "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "relu": jax.nn.relu, "silu": jax.nn.silu}


@dataclasses.dataclass(frozen=True)
class UMT5Spec:
    """Encoder architecture (transformers config names); defaults are umT5-XXL as Wan2.1 uses it."""

    vocab_size: int = 256384
    d_model: int = 4096
    d_kv: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dense_act_fn: str = "gelu_new"
    is_gated_act: bool = True
    layer_norm_epsilon: float = 1e-6
    dtype: str = "float32"

    def __post_init__(self):
        if self.dense_act_fn not in _ACT:
            raise ConfigError(f"umT5 activation {self.dense_act_fn!r} is not supported; supported: {sorted(_ACT)}")


class UMT5Output(NamedTuple):
    last_hidden_state: jax.Array  # (B, L, D), after the final norm
    hidden_states: tuple[jax.Array, ...]  # embeddings, then the output of every layer but the last (upstream order)


def relative_position_bucket(relative: jax.Array, num_buckets: int, max_distance: int) -> jax.Array:
    """Bidirectional T5 buckets: half the buckets per direction, exact below ``num_buckets/4``, log-spaced above."""
    num_buckets //= 2
    buckets = (relative > 0).astype(jnp.int32) * num_buckets
    rel = jnp.abs(relative)
    max_exact = num_buckets // 2
    ratio = jnp.log(jnp.maximum(rel, 1).astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = jnp.minimum(max_exact + (ratio * (num_buckets - max_exact)).astype(jnp.int32), num_buckets - 1)
    return buckets + jnp.where(rel < max_exact, rel, large)


class SelfAttention(nnx.Module):
    def __init__(self, spec: UMT5Spec, *, rngs: nnx.Rngs):
        inner, dt = spec.num_heads * spec.d_kv, jnp.dtype(spec.dtype)
        self.spec = spec
        self.q = dense(spec.d_model, inner, "embed", "heads", use_bias=False, dtype=dt, rngs=rngs)
        self.k = dense(spec.d_model, inner, "embed", "heads", use_bias=False, dtype=dt, rngs=rngs)
        self.v = dense(spec.d_model, inner, "embed", "heads", use_bias=False, dtype=dt, rngs=rngs)
        self.o = dense(inner, spec.d_model, "heads", "embed", use_bias=False, dtype=dt, rngs=rngs)
        self.relative_attention_bias = nnx.Param(
            jax.random.normal(rngs.params(), (spec.relative_attention_num_buckets, spec.num_heads)) * 0.02,
            **axes(None, None))

    def bias(self, length: int) -> jax.Array:
        """``(1, H, L, L)`` position bias."""
        pos = jnp.arange(length)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.spec.relative_attention_num_buckets,
                                           self.spec.relative_attention_max_distance)
        return self.relative_attention_bias[...][buckets].transpose(2, 0, 1)[None].astype(jnp.float32)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        b, n, _ = x.shape
        h, d = self.spec.num_heads, self.spec.d_kv
        q = self.q(x).reshape(b, n, h, d)
        k = self.k(x).reshape(b, n, h, d)
        v = self.v(x).reshape(b, n, h, d)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + self.bias(n)
        logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        return self.o(jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, h * d))


class FeedForward(nnx.Module):
    def __init__(self, spec: UMT5Spec, *, rngs: nnx.Rngs):
        dt = jnp.dtype(spec.dtype)
        self.act = _ACT[spec.dense_act_fn]
        self.gated = spec.is_gated_act
        self.wi_0 = dense(spec.d_model, spec.d_ff, "embed", "mlp", use_bias=False, dtype=dt, rngs=rngs)
        self.wi_1 = (dense(spec.d_model, spec.d_ff, "embed", "mlp", use_bias=False, dtype=dt, rngs=rngs)
                     if spec.is_gated_act else None)
        self.wo = dense(spec.d_ff, spec.d_model, "mlp", "embed", use_bias=False, dtype=dt, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.act(self.wi_0(x))
        if self.wi_1 is not None:
            h = h * self.wi_1(x)
        return self.wo(h)


class Block(nnx.Module):
    def __init__(self, spec: UMT5Spec, *, rngs: nnx.Rngs):
        self.attn_norm = RMSNorm(spec.d_model, spec.layer_norm_epsilon, "embed")
        self.attention = SelfAttention(spec, rngs=rngs)
        self.ff_norm = RMSNorm(spec.d_model, spec.layer_norm_epsilon, "embed")
        self.ff = FeedForward(spec, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + self.attention(self.attn_norm(x), mask).astype(x.dtype)
        return x + self.ff(self.ff_norm(x)).astype(x.dtype)


class UMT5Encoder(nnx.Module):
    """``token ids (B, L)`` (+ ``attention_mask (B, L)``, 1 on real tokens) -> :class:`UMT5Output`."""

    def __init__(self, spec: UMT5Spec, *, rngs: nnx.Rngs):
        self.spec = spec
        self.embed_tokens = nnx.Embed(spec.vocab_size, spec.d_model, rngs=rngs,
                                      embedding_metadata=axes("vocab", "embed"))
        self.blocks = nnx.List([Block(spec, rngs=rngs) for _ in range(spec.num_layers)])
        self.final_layer_norm = RMSNorm(spec.d_model, spec.layer_norm_epsilon, "embed")

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> UMT5Output:
        chex.assert_rank(input_ids, 2)
        mask = jnp.ones(input_ids.shape, bool) if attention_mask is None else attention_mask.astype(bool)
        x = self.embed_tokens(input_ids).astype(jnp.dtype(self.spec.dtype))
        states = [x]
        for block in self.blocks:
            x = block(x, mask)
            states.append(x)
        last = self.final_layer_norm(x)
        return UMT5Output(last, tuple(states[:-1]))
