"""The avatar's Gaussian cloud: a pytree of per-Gaussian arrays in their stored (optimisable) form.

Shapes for ``N`` Gaussians, SH degree ``d`` (``K = (d+1)^2``), ``B`` skinning slots:

- ``means (N,3)``, ``log_scales (N,3)`` (natural log of linear scales), ``quats (N,4)`` (w,x,y,z),
  ``opacity_logits (N,)``, ``sh (N,K,3)`` (3DGS real SH; DC term ``sh[:,0]``, colour = 0.5 + C0·dc),
- bindings to the body template: ``part (N,) int32`` (:mod:`avatar_jax.body.parts`), ``face (N,)
  int32`` and ``bary (N,3)`` (the template triangle and barycentric point it was born on),
  ``skin_joints (N,B) int32`` / ``skin_weights (N,B)`` (LBS weights interpolated from the triangle).

:meth:`GaussianCloud.render_args` gives what the renderer takes (linear scales, opacities in [0,1]).
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp

SH_C0 = 0.28209479177387814


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GaussianCloud:
    means: jax.Array
    log_scales: jax.Array
    quats: jax.Array
    opacity_logits: jax.Array
    sh: jax.Array
    part: jax.Array
    face: jax.Array
    bary: jax.Array
    skin_joints: jax.Array
    skin_weights: jax.Array

    @property
    def num(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return int(round(self.sh.shape[1] ** 0.5)) - 1

    def render_args(self) -> dict:
        """Keyword arguments for ``avatar_jax.render.render``: means, quats, scales, opacities, colors."""
        colors = self.sh if self.sh.shape[1] > 1 else rgb_from_dc(self.sh[:, 0])
        return dict(means=self.means, quats=self.quats, scales=jnp.exp(self.log_scales),
                    opacities=jax.nn.sigmoid(self.opacity_logits), colors=colors)

    def replace(self, **changes) -> GaussianCloud:
        return dataclasses.replace(self, **changes)


def rgb_from_dc(dc: jax.Array) -> jax.Array:
    """DC SH coefficients ``(...,3)`` -> RGB ``(...,3)`` (3DGS convention, clamped at 0)."""
    return jnp.maximum(dc * SH_C0 + 0.5, 0.0)


def dc_from_rgb(rgb: jax.Array) -> jax.Array:
    """RGB ``(...,3)`` -> DC SH coefficients ``(...,3)``."""
    return (rgb - 0.5) / SH_C0


def check(cloud: GaussianCloud) -> None:
    """chex shape checks for a cloud at a public boundary."""
    n = cloud.num
    chex.assert_shape([cloud.means, cloud.log_scales], (n, 3))
    chex.assert_shape(cloud.quats, (n, 4))
    chex.assert_shape(cloud.opacity_logits, (n,))
    chex.assert_rank(cloud.sh, 3)
    chex.assert_equal(cloud.skin_joints.shape, cloud.skin_weights.shape)
