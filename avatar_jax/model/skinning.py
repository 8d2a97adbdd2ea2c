"""Identity-adaptive skinning: blend particle motions into per-Gaussian motions.

Each Gaussian is bound to ``K`` particles with template weights; a weight decoder refines them from
the Gaussian's query token (paper: "identity-adaptive skinning"). The blended transform moves the
Gaussian's mean and rotates its covariance (its quaternion); scales are untouched here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.geometry import quaternion
from avatar_jax.model.layers import MLP


class WeightDecoder(nnx.Module):
    """Refines template weights: ``softmax(log w_template + MLP(Q_i))`` over a Gaussian's K particles.

    The MLP's last layer starts at zero, so a fresh decoder returns the template weights exactly.
    """

    def __init__(self, d: int, k: int, rngs: nnx.Rngs, *, dtype=jnp.float32, param_dtype=jnp.float32):
        self.k = k
        self.mlp = MLP(d, d, k, rngs, zero_init_out=True, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, tokens: jax.Array, template_weight: jax.Array) -> jax.Array:
        """``tokens (N,d)``, ``template_weight (N,K)`` -> refined weights ``(N,K)``, rows sum to 1."""
        delta = self.mlp(tokens).astype(jnp.float32)
        logits = jnp.log(jnp.maximum(template_weight, 1e-8)) + delta
        refined = jax.nn.softmax(logits, axis=-1)
        # Where the template weight is exactly one-hot, keep the result exactly one-hot-consistent
        # at init: softmax(log w) == w up to rounding, which is what we want.
        return refined


def blend(world_transforms: jax.Array, bind_index: jax.Array, bind_weight: jax.Array) -> jax.Array:
    """Linear blend of particle motions: ``(T, M, 4, 4)`` -> per-Gaussian ``(T, N, 3, 4)``."""
    gathered = world_transforms[:, bind_index, :3, :]  # (T, N, K, 3, 4)
    return jnp.einsum("nk,tnkij->tnij", bind_weight, gathered)


def apply_to_gaussians(blended: jax.Array, means: jax.Array, quats: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Move means and rotate orientations by blended transforms.

    ``blended (T,N,3,4)``, ``means (N,3)``, ``quats (N,4)`` -> ``means (T,N,3)``, ``quats (T,N,4)``.
    The blended 3x3 block is generally not a rotation; its nearest rotation is taken through the
    quaternion (Shepperd) so covariances stay valid. An identity blend returns inputs exactly.
    """
    rot, trans = blended[..., :3], blended[..., 3]
    posed_means = jnp.einsum("tnij,nj->tni", rot, means) + trans
    q_motion = quaternion.from_matrix(rot)
    posed_quats = quaternion.multiply(q_motion, jnp.broadcast_to(quats, q_motion.shape))
    return posed_means, posed_quats
