"""Gaussian head (paper Eq. 4-8): per-Gaussian residuals of position, scale, opacity and colour.

``H_t = CrossAttn(D_t, Q)``: each Gaussian's query token attends over a short causal window of
driving tokens ``D_{t-w+1..t}`` (so a Gaussian can pick the time offset that matters to it, e.g. lip
rounding before a vowel), then a face, body or hand branch (by the Gaussian's part) predicts
``dp, ds, dalpha, dc``. The window is causal so that streaming in chunks equals one pass.
Residuals are bounded (``tanh``) and every output layer starts at zero: a fresh head changes nothing.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.model.canonical import PART_BODY, PART_FACE, PART_HANDS
from avatar_jax.model.layers import MLP, CrossAttention, linear


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Residuals:
    """Per-frame, per-Gaussian residuals, each ``(T, N, ...)`` float32 and already bounded."""

    offset: jax.Array  # (T, N, 3) added to posed means
    log_scale: jax.Array  # (T, N, 3) added to log-scales
    opacity_logit: jax.Array  # (T, N) added to opacity logits
    color: jax.Array  # (T, N, 3) added to the base (DC) colour


class OffsetBranch(nnx.Module):
    """One part's trunk and the four output heads MLP_mu, MLP_Sigma, MLP_alpha, MLP_c (zero-initialised)."""

    def __init__(self, d: int, rngs: nnx.Rngs, *, dtype=jnp.float32, param_dtype=jnp.float32):
        self.trunk = MLP(d, d, d, rngs, out_axis="embed", dtype=dtype, param_dtype=param_dtype)
        kw = dict(zero_init=True, dtype=dtype, param_dtype=param_dtype)
        self.mu = linear(d, 3, ("embed", None), rngs, **kw)
        self.sigma = linear(d, 3, ("embed", None), rngs, **kw)
        self.alpha = linear(d, 1, ("embed", None), rngs, **kw)
        self.color = linear(d, 3, ("embed", None), rngs, **kw)

    def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        h = jax.nn.gelu(self.trunk(h))
        return self.mu(h), self.sigma(h), self.alpha(h)[..., 0], self.color(h)


class GaussianHead(nnx.Module):
    def __init__(self, d: int, num_heads: int, window: int, rngs: nnx.Rngs, *, branches=("body", "face", "hands"),
                 max_offset: float = 0.05, max_log_scale: float = 0.5, max_opacity_logit: float = 4.0,
                 max_color: float = 0.5, residual_scale: float = 0.1, dtype=jnp.float32, param_dtype=jnp.float32):
        if window < 1:
            raise ValueError(f"head window must be >= 1 frame, got {window}")
        self.window = window
        self.bounds = (max_offset, max_log_scale, max_opacity_logit, max_color)
        self.residual_scale = residual_scale  # keeps the first optimiser steps small against the bounds
        self.branch_names = tuple(branches)
        init = 0.02 * jax.random.normal(rngs.params(), (window, d), param_dtype)
        self.time_embed = nnx.Param(init, out_sharding=(None, "embed"))
        self.attn = CrossAttention(d, num_heads, rngs, dtype=dtype, param_dtype=param_dtype)
        self.norm = nnx.LayerNorm(d, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                                  scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("embed",)),
                                  bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",)))
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        # A branch that is switched off (paper Table 3 ablations) does not exist: its part gets no residual.
        self.body = OffsetBranch(d, rngs, **kw) if "body" in branches else None
        self.face = OffsetBranch(d, rngs, **kw) if "face" in branches else None
        self.hands = OffsetBranch(d, rngs, **kw) if "hands" in branches else None

    def __call__(self, windows: jax.Array, window_valid: jax.Array, tokens: jax.Array, part: jax.Array,
                 part_counts: tuple[int, int, int] | None = None) -> Residuals:
        """``windows (T, w, d)`` causal driving windows, ``window_valid (T, w)`` bool,
        ``tokens (N, d)`` Gaussian queries, ``part (N,)`` -> :class:`Residuals` ``(T, N, ...)``.

        ``part_counts`` (static) says the Gaussians are sorted by part with these counts."""
        q = self.attn.split_heads(self.attn.q(tokens))  # (N, h, dh), once per sequence
        ctx = windows + self.time_embed[...].astype(windows.dtype)
        k = self.attn.split_heads(self.attn.k(ctx))  # (T, w, h, dh)
        v = self.attn.split_heads(self.attn.v(ctx))
        scale = 1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], jnp.float32)).astype(q.dtype)
        logits = jnp.einsum("nhd,twhd->thnw", q * scale, k).astype(jnp.float32)
        logits = jnp.where(window_valid[:, None, None, :], logits, -1e30)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        attended = jnp.einsum("thnw,twhd->tnhd", weights, v)
        hidden = tokens[None] + self.attn.out(attended.reshape(attended.shape[:-2] + (-1,)))
        hidden = self.norm(hidden)

        t, n = hidden.shape[0], hidden.shape[1]
        branches = ((PART_BODY, self.body), (PART_FACE, self.face), (PART_HANDS, self.hands))
        if part_counts is not None:
            # Sorted avatar: each branch runs on its own contiguous slice only (1x compute, not 3x).
            pieces, start = [[], [], [], []], 0
            for (_, branch), count in zip(branches, part_counts, strict=True):
                h = hidden[:, start:start + count]
                raws = branch(h) if branch is not None else (
                    jnp.zeros((t, count, 3)), jnp.zeros((t, count, 3)), jnp.zeros((t, count)), jnp.zeros((t, count, 3)))
                for i, raw in enumerate(raws):
                    pieces[i].append(raw.astype(jnp.float32))
                start += count
            outs = [jnp.concatenate(p, axis=1) for p in pieces]
        else:
            outs = [jnp.zeros((t, n, 3)), jnp.zeros((t, n, 3)), jnp.zeros((t, n)), jnp.zeros((t, n, 3))]
            for label, branch in branches:
                if branch is None:
                    continue
                sel = part == label
                for i, raw in enumerate(branch(hidden)):
                    mask = sel[None, :, None] if raw.ndim == 3 else sel[None, :]
                    outs[i] = jnp.where(mask, raw.astype(jnp.float32), outs[i])
        bounded = [b * jnp.tanh(self.residual_scale * o / b) for o, b in zip(outs, self.bounds, strict=True)]
        return Residuals(*bounded)
