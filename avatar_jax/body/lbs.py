"""Forward kinematics and linear blend skinning of the body template, in JAX.

Pose parameters are one axis-angle rotation per joint, ``pose (J,3)``, expressed in that joint's
rest bone frame (anny's bone frames: y along the bone), plus a root transform ``root (4,4)`` that
places the whole body in the world. With ``pose = 0`` and ``root = I`` every joint sits at its rest
frame and skinning returns the rest vertices exactly.

For a shaped body the rest frames keep the template's rotations and take the shaped joint
positions: ``Rest_j = [R_j | h_j(phenotype)]``. The posed frame of joint ``j`` is
``G_j = G_parent · Rest_parent⁻¹ · Rest_j · Rot(pose_j)`` (root: ``G_0 = root · Rest_0 · Rot(pose_0)``)
and a vertex moves by ``Σ_k w_k G_{i_k} Rest_{i_k}⁻¹``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.body.template import BodyTemplate
from avatar_jax.geometry import se3


def _levels(parents: np.ndarray) -> list[np.ndarray]:
    """Joints grouped by depth (root first), so each level is one batched matmul."""
    depth = np.zeros(len(parents), np.int32)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return [np.nonzero(depth == d)[0] for d in range(depth.max() + 1)]


def rest_frames(template: BodyTemplate, joints: jax.Array) -> jax.Array:
    """Rest bone frames ``(J,4,4)`` for shaped joint positions ``joints (J,3)``."""
    rot = jnp.asarray(template.rest_transforms[:, :3, :3])
    return se3.from_rotation_translation(rot, joints)


def forward_kinematics(template: BodyTemplate, joints: jax.Array, pose: jax.Array,
                       root: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Posed world frames ``G (J,4,4)`` and skinning transforms ``A = G · Rest⁻¹ (J,4,4)``.

    ``joints (J,3)`` shaped rest joint positions, ``pose (J,3)`` axis-angle per joint (bone frame),
    ``root (4,4)`` world placement (identity if None).
    """
    num = template.num_joints
    chex.assert_shape(joints, (num, 3))
    chex.assert_shape(pose, (num, 3))
    rest = rest_frames(template, joints)
    parents = template.parents
    local_rest = rest.at[1:].set(se3.compose(se3.inverse(rest[parents[1:]]), rest[1:]))
    rot = se3.from_rotation_translation(se3.exp_so3(pose), jnp.zeros((num, 3), pose.dtype))
    local = se3.compose(local_rest, rot)  # (J,4,4): parent frame -> posed child frame
    if root is not None:
        local = local.at[0].set(root @ local[0])
    frames = jnp.zeros((num, 4, 4), local.dtype)
    for level in _levels(parents):
        if level[0] == 0:
            frames = frames.at[0].set(local[0])
        else:
            frames = frames.at[level].set(se3.compose(frames[parents[level]], local[level]))
    return frames, se3.compose(frames, se3.inverse(rest))


def skin(template: BodyTemplate, vertices: jax.Array, skinning: jax.Array) -> jax.Array:
    """Linear blend skinning of ``vertices (V,3)`` with per-joint ``skinning (J,4,4)`` -> ``(V,3)``."""
    idx = jnp.asarray(template.skin_indices)
    w = jnp.asarray(template.skin_weights)
    blended = jnp.einsum("vk,vkab->vab", w, skinning[idx])  # (V,4,4)
    return jnp.einsum("vab,vb->va", blended[:, :3, :3], vertices) + blended[:, :3, 3]


def skin_points(skinning: jax.Array, points: jax.Array, joint_ids: jax.Array, weights: jax.Array) -> jax.Array:
    """Skin arbitrary points (e.g. Gaussian centres): ``points (N,3)``, ``joint_ids (N,K)``, ``weights (N,K)``.

    Returns positions ``(N,3)`` and the blended rotation ``(N,3,3)`` (for rotating Gaussian frames).
    """
    blended = jnp.einsum("nk,nkab->nab", weights, skinning[joint_ids])
    return jnp.einsum("nab,nb->na", blended[:, :3, :3], points) + blended[:, :3, 3], blended[:, :3, :3]
