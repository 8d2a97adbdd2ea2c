"""Initialise a Gaussian cloud on the body template's surface.

Dense where expression happens, sparse elsewhere (the paper's "dense over expressive regions"): a
triangle's share of Gaussians is its area times a density factor that grows with how far the facial
action blendshapes move it (lips, eyelids, brows) and is raised on the hands (fingers) and the face.
Each Gaussian is a flat disc in its triangle's plane, bound to the triangle (face index + barycentric
point) with skinning weights interpolated from the triangle's vertices.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from avatar_jax.body import parts
from avatar_jax.body.template import BodyTemplate
from avatar_jax.gaussians.cloud import GaussianCloud, dc_from_rgb
from avatar_jax.geometry import quaternion

SKIN_SLOTS = 8


def expressiveness(template: BodyTemplate) -> np.ndarray:
    """Per-vertex score in [0,1]: the largest displacement any facial action gives it, normalised."""
    score = np.zeros(template.num_vertices, np.float32)
    move = np.linalg.norm(template.expression_deltas, axis=-1).max(0)  # (E,)
    score[template.expression_vertices] = move / max(float(move.max()), 1e-9)
    return score


def density(template: BodyTemplate, expressive_gain: float = 12.0, hand_gain: float = 4.0,
            face_gain: float = 3.0, hidden_gain: float = 0.1) -> np.ndarray:
    """Per-triangle sampling weight ``(F,)`` = area x region factor (see module docstring)."""
    v = template.reference_vertices
    f = template.faces
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    expr = expressiveness(template)[f].mean(1)
    label = template.part_labels[f]
    gain = 1.0 + expressive_gain * np.sqrt(expr)
    gain = gain * np.where(np.isin(label, parts.HAND_PARTS).all(1), hand_gain, 1.0)
    gain = gain * np.where(np.isin(label, (parts.HEAD,)).all(1), face_gain, 1.0)
    # Mouth cavity, tongue and the backs of the eyes are mostly hidden: keep a few Gaussians there.
    gain = gain * np.where(np.isin(label, (parts.MOUTH, parts.EYES)).any(1), hidden_gain, 1.0)
    return area * gain


def _frames(template: BodyTemplate, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Rotation ``(n,3,3)`` whose columns are (edge, bitangent, normal) of each triangle."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    normal = np.cross(b - a, c - a)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    tangent = (b - a) / np.maximum(np.linalg.norm(b - a, axis=1, keepdims=True), 1e-12)
    bitangent = np.cross(normal, tangent)
    return np.stack([tangent, bitangent, normal], axis=-1)


def bind_skinning(template: BodyTemplate, faces: np.ndarray, bary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Skinning of points ``bary (n,3)`` on triangles ``faces (n,3)`` -> top-``SKIN_SLOTS`` joints, weights."""
    n = len(faces)
    dense = np.zeros((n, template.num_joints), np.float32)
    for k in range(3):
        rows = np.repeat(np.arange(n), template.skin_indices.shape[1])
        np.add.at(dense, (rows, template.skin_indices[faces[:, k]].ravel()),
                  (bary[:, k : k + 1] * template.skin_weights[faces[:, k]]).ravel())
    joints = np.argsort(-dense, axis=1)[:, :SKIN_SLOTS]
    weights = np.take_along_axis(dense, joints, 1)
    return joints.astype(np.int32), (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def init_on_template(template: BodyTemplate, num: int, *, vertices: np.ndarray | None = None,
                     sh_degree: int = 0, seed: int = 0, color=(0.6, 0.6, 0.6), opacity: float = 0.9,
                     face_weights: np.ndarray | None = None) -> GaussianCloud:
    """``num`` Gaussians on the surface of ``vertices (V,3)`` (default: the template at rest).

    ``face_weights (F,)`` overrides :func:`density` (e.g. zero on triangles a caller does not want).
    """
    if num < 1:
        raise ValueError(f"need at least one Gaussian, got {num}")
    rng = np.random.default_rng(seed)
    verts = np.asarray(template.reference_vertices if vertices is None else vertices, np.float64)
    weights = density(template) if face_weights is None else np.asarray(face_weights, np.float64)
    face_ids = rng.choice(len(template.faces), size=num, p=weights / weights.sum())
    face_ids.sort()  # neighbours in memory are neighbours on the body
    r1, r2 = rng.uniform(size=(2, num))
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    tri = template.faces[face_ids]
    means = np.einsum("nk,nkc->nc", bary, verts[tri])
    # Disc radius from the local sample density: area per Gaussian on this triangle's region.
    a, b, c = (verts[tri[:, k]] for k in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    per_gaussian = weights[face_ids] / weights.sum() * num  # expected Gaussians per triangle
    radius = np.sqrt(np.maximum(area / np.maximum(per_gaussian, 1e-9), 1e-10) / np.pi)
    radius = np.clip(radius, 5e-4, 0.05)
    scales = np.stack([radius, radius, 0.2 * radius], axis=1)
    rot = _frames(template, verts, tri)
    quats = np.asarray(quaternion.from_matrix(jnp.asarray(rot, jnp.float32)))
    joints, skin_w = bind_skinning(template, tri, bary)
    k = (sh_degree + 1) ** 2
    sh = np.zeros((num, k, 3), np.float32)
    sh[:, 0] = np.asarray(dc_from_rgb(jnp.asarray(color, jnp.float32)))
    logit = np.log(opacity / (1 - opacity))
    return GaussianCloud(
        means=jnp.asarray(means, jnp.float32), log_scales=jnp.asarray(np.log(scales), jnp.float32),
        quats=jnp.asarray(quats, jnp.float32), opacity_logits=jnp.full((num,), logit, jnp.float32),
        sh=jnp.asarray(sh), part=jnp.asarray(_majority(template.part_labels[tri]), jnp.int32),
        face=jnp.asarray(face_ids, jnp.int32), bary=jnp.asarray(bary, jnp.float32),
        skin_joints=jnp.asarray(joints), skin_weights=jnp.asarray(skin_w),
    )


def _majority(labels: np.ndarray) -> np.ndarray:
    """Most common label of each row ``(n,3)`` -> ``(n,)`` (ties: the first vertex)."""
    a, b, c = labels.T
    return np.where(b == c, b, a)
