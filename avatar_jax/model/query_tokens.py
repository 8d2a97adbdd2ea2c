"""Gaussian query tokens ``Q`` (per Gaussian, pooled per particle) and template query tokens ``Q0``.

Without a learned reconstructor the tokens come from the canonical avatar itself: a Fourier encoding
of each Gaussian's rest position, its part label and its base colour. A reconstructor (paper 3.1)
can later replace :meth:`QueryEncoder.gaussian_tokens` behind the same shapes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.model.canonical import CanonicalAvatar
from avatar_jax.model.layers import MLP, fourier_dim, fourier_features

NUM_PARTS = 3


def base_color(colors: jax.Array) -> jax.Array:
    """RGB-ish base colour ``(N,3)`` from ``(N,3)`` RGB or the DC term of ``(N,C,3)`` SH."""
    return colors if colors.ndim == 2 else colors[:, 0]


class QueryEncoder(nnx.Module):
    """Builds ``Q (N,d)``, its per-particle pooling ``(M,d)`` and template tokens ``Q0 (M,d)``."""

    def __init__(self, d: int, num_bands: int, rngs: nnx.Rngs, *, with_template: bool = True, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.num_bands = num_bands
        gauss_in = fourier_dim(3, num_bands) + NUM_PARTS + 3
        templ_in = fourier_dim(3, num_bands) + NUM_PARTS
        self.gaussian_mlp = MLP(gauss_in, d, d, rngs, out_axis="embed", dtype=dtype, param_dtype=param_dtype)
        # Template tokens only feed the particle deformer; without it they would be dead weights.
        self.template_mlp = (MLP(templ_in, d, d, rngs, out_axis="embed", dtype=dtype, param_dtype=param_dtype)
                             if with_template else None)

    def gaussian_tokens(self, avatar: CanonicalAvatar) -> jax.Array:
        """``(N, d)``: one query token per Gaussian."""
        feats = jnp.concatenate(
            [fourier_features(avatar.means, self.num_bands), jax.nn.one_hot(avatar.part, NUM_PARTS),
             base_color(avatar.colors)], axis=-1)
        return self.gaussian_mlp(feats)

    def template_tokens(self, avatar: CanonicalAvatar) -> jax.Array:
        """``(M, d)``: one token per particle from the template's rest layout (identity-agnostic)."""
        if self.template_mlp is None:
            raise ValueError("this QueryEncoder was built without template tokens (no particle deformer)")
        feats = jnp.concatenate(
            [fourier_features(avatar.particle_rest, self.num_bands), jax.nn.one_hot(avatar.particle_part, NUM_PARTS)],
            axis=-1)
        return self.template_mlp(feats)


def pool_per_particle(tokens: jax.Array, bind_index: jax.Array, bind_weight: jax.Array, num_particles: int
                      ) -> jax.Array:
    """Skinning-weighted mean of Gaussian tokens per particle: ``(N,d)`` -> ``(M,d)``.

    A particle with no bound Gaussian gets a zero token.
    """
    n, k = bind_index.shape
    w = bind_weight.reshape(-1).astype(tokens.dtype)
    idx = bind_index.reshape(-1)
    summed = jax.ops.segment_sum(jnp.repeat(tokens, k, axis=0) * w[:, None], idx, num_segments=num_particles)
    total = jax.ops.segment_sum(w, idx, num_segments=num_particles)
    return summed / jnp.maximum(total, 1e-6)[:, None]
