"""A neighbourhood graph over the Gaussians of a canonical cloud that follows the body surface.

Edges join Gaussians a few centimetres apart whose surface normals agree, so that the graph walks
along the skin and never jumps through the body (front of the head to its back, chest to back,
one thigh to the other). Two cuts encode what a photo should and should not spread to:
- edges between different body parts are weak (a colour crosses the neck, not easily);
- the face region (near the template's face landmarks) has no edges to the rest of the head, so
  the back of the head is filled from hair, ears and neck, never from the eyes and mouth.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial import cKDTree

from avatar_jax.body import keypoints as kp
from avatar_jax.body import parts
from avatar_jax.body.template import BodyTemplate

CROSS_PART_WEIGHT = 0.1


@dataclasses.dataclass(frozen=True)
class SurfaceGraph:
    """``edges (E,2)`` int32 (i < j), ``weights (E,)`` float32 in (0,1], ``face_region (N,)`` bool."""

    edges: np.ndarray
    weights: np.ndarray
    face_region: np.ndarray

    def laplacian(self, n: int):
        """Weighted graph Laplacian ``(N,N)`` (scipy CSR)."""
        from scipy.sparse import coo_matrix

        i, j = self.edges.T
        w = self.weights.astype(np.float64)
        adj = coo_matrix((np.concatenate([w, w]), (np.concatenate([i, j]), np.concatenate([j, i]))), (n, n)).tocsr()
        deg = np.asarray(adj.sum(1)).ravel()
        from scipy.sparse import diags

        return (diags(deg) - adj).tocsr()


def face_region(template: BodyTemplate, means: np.ndarray, part: np.ndarray, vertices: np.ndarray | None = None,
                radius: float = 0.02, normals: np.ndarray | None = None, min_forward: float = 0.25) -> np.ndarray:
    """``(N,)`` True for head Gaussians within ``radius`` metres of a face landmark (eyes, lips, nose,
    cheeks, forehead, jaw line) of the template at ``vertices`` (default: rest).

    With ``normals (N,3)`` (canonical, the body faces -z) only Gaussians facing forward by at least
    ``min_forward`` (cosine) count: the face oval's landmarks reach the ears, and 2 cm around them
    would otherwise carry face colours round the side of the head towards its back.
    """
    v = template.reference_vertices if vertices is None else vertices
    marks = kp.regress(np.asarray(v), template.keypoint_vertices, template.keypoint_weights)[kp.FACE]
    d, _ = cKDTree(marks).query(means)
    out = np.isin(part, parts.FACE_PARTS) & (d < radius)
    if normals is not None:
        out &= np.asarray(normals)[:, 2] < -min_forward
    return out


def for_cloud(template: BodyTemplate, cloud, vertices: np.ndarray | None = None) -> SurfaceGraph:
    """The surface graph of a canonical ``cloud`` on the template at ``vertices``, with its
    forward-facing face region cut off."""
    from avatar_jax.personalize.photometric import normals_of

    means, part = np.asarray(cloud.means), np.asarray(cloud.part)
    normals = np.asarray(normals_of(cloud))
    return build(means, normals, part, face_region(template, means, part, vertices, normals=normals))


def build(means: np.ndarray, normals: np.ndarray, part: np.ndarray, face: np.ndarray, *, k: int = 10,
          max_dist: float = 0.04, min_normal_dot: float = 0.2) -> SurfaceGraph:
    """Graph over ``means (N,3)`` with unit ``normals (N,3)``, part ids ``part (N,)``, ``face (N,)`` region."""
    means = np.asarray(means, np.float64)
    n = len(means)
    dist, nbr = cKDTree(means).query(means, k=min(k + 1, n))
    i = np.repeat(np.arange(n), nbr.shape[1])
    j, d = nbr.ravel(), dist.ravel()
    keep = (i != j) & (d < max_dist) & np.isfinite(d)
    # Normals agree: both sides of a thin part (an ear, fingers pressed together) stay apart.
    keep &= np.einsum("ec,ec->e", normals[i], normals[np.minimum(j, n - 1)]) > min_normal_dot
    keep &= face[i] == face[np.minimum(j, n - 1)]
    i, j = i[keep], j[keep]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    pairs = np.unique(np.stack([lo, hi], 1), axis=0)
    w = np.where(part[pairs[:, 0]] == part[pairs[:, 1]], 1.0, CROSS_PART_WEIGHT).astype(np.float32)
    return SurfaceGraph(pairs.astype(np.int32), w, np.asarray(face, bool))
