"""Body-template skinning under the particles (paper Fig. 2: template LBS + particle residuals).

A motion head predicts, per frame, one rotation per template joint from the causal window of driving
tokens (the same window the Gaussian head sees); joints rotate about their rest pivots, each after its
parent, and the template's skinning weights blend them per Gaussian. The pose is predicted per frame,
not integrated, so the body path cannot drift; the particles add the micro-dynamics on top.
The output layer starts at zero: a fresh head holds the template's rest pose.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.geometry import se3
from avatar_jax.model.deformer import local_to_world
from avatar_jax.model.layers import MLP


class BodyMotionHead(nnx.Module):
    """``windows (T, w, d)`` -> joint rotations as axis-angle ``(T, J, 3)``, bounded by ``max_rotation``."""

    def __init__(self, d: int, window: int, num_joints: int, rngs: nnx.Rngs, *, max_rotation: float = 0.6,
                 output_scale: float = 0.1, dtype=jnp.float32, param_dtype=jnp.float32):
        self.num_joints = num_joints
        self.max_rotation = max_rotation
        self.output_scale = output_scale  # keeps the first optimiser steps to small angles
        self.mlp = MLP(window * d, 2 * d, 3 * num_joints, rngs, zero_init_out=True, dtype=dtype,
                       param_dtype=param_dtype)

    def __call__(self, windows: jax.Array, window_valid: jax.Array) -> jax.Array:
        t, w, d = windows.shape
        x = jnp.where(window_valid[..., None], windows, 0).reshape(t, w * d)
        raw = self.output_scale * self.mlp(x).astype(jnp.float32)
        return (self.max_rotation * jnp.tanh(raw / self.max_rotation)).reshape(t, self.num_joints, 3)


def joint_transforms(rotations: jax.Array, pivots: jax.Array, parents: jax.Array) -> jax.Array:
    """Forward kinematics: ``rotations (T,J,3)`` about ``pivots (J,3)``, ``parents (J,)`` -> world ``(T,J,4,4)``.

    Joints are listed parents first (``parents[j] < j``, -1 for a root), so one pass composes the chain.
    """
    t, j = rotations.shape[:2]
    local = se3.from_rotation_translation(se3.exp_so3(rotations), jnp.zeros((t, j, 3), rotations.dtype))
    local = local_to_world(local, pivots)  # rotation about each joint's rest pivot
    world = local
    for k in range(j):  # J is small and static
        parent = parents[k]
        above = jnp.where(parent >= 0, world[:, jnp.maximum(parent, 0)], jnp.eye(4, dtype=local.dtype))
        world = world.at[:, k].set(above @ local[:, k])
    return world


def blend_joints(world: jax.Array, index: jax.Array, weight: jax.Array) -> jax.Array:
    """Template LBS: ``world (T,J,4,4)``, ``index/weight (N,Kj)`` -> per-Gaussian ``(T,N,4,4)``."""
    gathered = world[:, index]  # (T, N, Kj, 4, 4)
    return jnp.einsum("nk,tnkij->tnij", weight.astype(world.dtype), gathered)
