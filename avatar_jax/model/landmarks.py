"""Where the avatar's MediaPipe landmarks are in every frame: a fixed binding to its Gaussians.

The body template knows where each of the ``P = 553`` MediaPipe keypoints sits on its surface
(:mod:`avatar_jax.body.keypoints`, order pose 33, face 478, left hand 21, right hand 21). The model
does not move template vertices, it moves Gaussians, so a landmark follows the Gaussians around it:

    landmark_t(l) = sum_k weight[l, k] * means_t[gaussian_index[l, k]]

The binding is built once, in numpy, from the canonical avatar (:func:`build_landmark_binding`):
for each landmark the ``K`` Gaussians of the same coarse part (body / face / hands) nearest to its
rest position, with affine weights (summing to 1) chosen by a small regularised least-squares fit
so that the rest-pose landmark is reproduced (up to the regulariser) while staying close to
distance-based softmin weights (no wild extrapolation when the landmark lies off the Gaussians).
:func:`landmarks` applies it to per-frame means; it is a gather and a weighted sum (jit, grad).

Rest positions come from the template (:func:`template_rest_landmarks`) for avatars built on it, or
from anywhere else for other avatars: the binding only needs ``(L, 3)`` points and their parts.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.body import keypoints as kp
from avatar_jax.errors import InputError
from avatar_jax.model.canonical import PART_BODY, PART_FACE, PART_HANDS

# Pose keypoints that lie on the face (nose, eyes, ears, mouth corners) and on the hands (wrists,
# pinky / index / thumb knuckles): they bind to Gaussians of that part.
_POSE_FACE = tuple(range(0, 11))
_POSE_HANDS = tuple(range(15, 23))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LandmarkBinding:
    """``gaussian_index (L,K) int32`` and affine ``weight (L,K)`` (rows sum to 1); ``part (L,) int32``."""

    gaussian_index: jax.Array
    weight: jax.Array
    part: jax.Array

    @property
    def num_landmarks(self) -> int:
        return self.gaussian_index.shape[0]


def template_landmark_parts() -> np.ndarray:
    """Coarse part ``(553,) int32`` of each template keypoint (template keypoint order)."""
    part = np.full(kp.NUM_KEYPOINTS, PART_BODY, np.int32)
    part[list(_POSE_FACE)] = PART_FACE
    part[list(_POSE_HANDS)] = PART_HANDS
    part[kp.FACE] = PART_FACE
    part[kp.LEFT_HAND] = PART_HANDS
    part[kp.RIGHT_HAND] = PART_HANDS
    return part


def template_rest_landmarks(template, vertices: np.ndarray | None = None) -> np.ndarray:
    """The 553 template keypoints ``(553,3)`` on ``vertices (V,3)`` (default: the template's reference rest).

    Pass the rest vertices the canonical avatar was built on (e.g. ``phenotype.shaped_rest`` of the
    fitted body) so the landmarks sit where that avatar's Gaussians are.
    """
    verts = template.reference_vertices if vertices is None else np.asarray(vertices, np.float32)
    if verts.shape != template.reference_vertices.shape:
        raise InputError(f"rest vertices must be {template.reference_vertices.shape}, got {verts.shape}")
    return kp.regress(verts, template.keypoint_vertices, template.keypoint_weights).astype(np.float32)


def build_landmark_binding(means: np.ndarray, part: np.ndarray, landmark_rest: np.ndarray,
                           landmark_part: np.ndarray, k: int = 4, sharpness: float = 0.01,
                           regularizer: float = 0.05) -> LandmarkBinding:
    """Bind ``L`` landmarks to the avatar's Gaussians (numpy, once per avatar).

    Args:
      means: ``(N,3)`` canonical Gaussian centres; ``part (N,)`` their coarse part labels.
      landmark_rest: ``(L,3)`` landmark positions in the same canonical space; ``landmark_part (L,)``.
      k: Gaussians per landmark (a part with fewer Gaussians, or none, borrows from all Gaussians).
      sharpness: distance scale (metres) of the softmin prior weights.
      regularizer: pull of the weights towards the softmin prior, relative to the squared spread of
        the K Gaussians (0: exact affine reproduction of the rest landmark, possibly extreme weights).

    Returns:
      A :class:`LandmarkBinding` with ``gaussian_index (L,K)``, ``weight (L,K)``.
    """
    means = np.asarray(means, np.float64)
    part = np.asarray(part)
    rest = np.asarray(landmark_rest, np.float64)
    lpart = np.asarray(landmark_part)
    if means.ndim != 2 or means.shape[1] != 3 or part.shape != means.shape[:1]:
        raise InputError(f"means must be (N,3) with part (N,), got {means.shape} and {part.shape}")
    if rest.ndim != 2 or rest.shape[1] != 3 or lpart.shape != rest.shape[:1]:
        raise InputError(f"landmarks must be (L,3) with parts (L,), got {rest.shape} and {lpart.shape}")
    if not 1 <= k <= means.shape[0]:
        raise InputError(f"k must be in [1, N={means.shape[0]}], got {k}")
    index = np.zeros((len(rest), k), np.int64)
    for p in np.unique(lpart):
        rows = np.nonzero(lpart == p)[0]
        pool = np.nonzero(part == p)[0]
        if len(pool) < k:  # the avatar has no (or too few) Gaussians of this part
            pool = np.arange(means.shape[0])
        d2 = ((rest[rows, None, :] - means[None, pool, :]) ** 2).sum(-1)
        index[rows] = pool[np.argsort(d2, axis=1)[:, :k]]
    weight = np.stack([_affine_weights(means[index[i]], rest[i], sharpness, regularizer)
                       for i in range(len(rest))])
    return LandmarkBinding(gaussian_index=jnp.asarray(index, jnp.int32), weight=jnp.asarray(weight, jnp.float32),
                           part=jnp.asarray(lpart, jnp.int32))


def _affine_weights(points: np.ndarray, target: np.ndarray, sharpness: float, regularizer: float) -> np.ndarray:
    """``argmin_w |points^T w - target|^2 + mu |w - w0|^2`` s.t. ``sum w = 1``; ``points (K,3)`` -> ``(K,)``.

    ``w0`` is the softmin of the distances; ``mu = regularizer * mean squared spread of points``.
    Solved through its KKT system (K+1 unknowns).
    """
    kk = points.shape[0]
    dist = np.linalg.norm(points - target, axis=1)
    w0 = np.exp(-(dist - dist.min()) / sharpness)
    w0 /= w0.sum()
    if kk == 1:
        return w0
    centre = points.mean(0)  # the affine problem is translation invariant; centring conditions it
    points, target = points - centre, target - centre
    spread = np.mean((points**2).sum(1))
    mu = regularizer * max(spread, 1e-12)
    a = points @ points.T + mu * np.eye(kk)
    kkt = np.zeros((kk + 1, kk + 1))
    kkt[:kk, :kk] = 2 * a
    kkt[:kk, kk] = 1.0
    kkt[kk, :kk] = 1.0
    rhs = np.concatenate([2 * (points @ target + mu * w0), [1.0]])
    return np.linalg.solve(kkt, rhs)[:kk]


def landmarks(frame_means: jax.Array, binding: LandmarkBinding) -> jax.Array:
    """Landmark positions ``(..., L, 3)`` from Gaussian centres ``(..., N, 3)`` (e.g. ``(T,N,3)``)."""
    chex.assert_rank(binding.gaussian_index, 2)
    chex.assert_equal_shape([binding.gaussian_index, binding.weight])
    if frame_means.shape[-1] != 3:
        raise InputError(f"frame means must be (..., N, 3), got {frame_means.shape}")
    picked = jnp.take(frame_means, binding.gaussian_index, axis=-2)  # (..., L, K, 3)
    return jnp.einsum("lk,...lkc->...lc", binding.weight.astype(frame_means.dtype), picked)
