"""Held-out scores of a training run: whole test-split clips (unseen sentences and voices), audio only in.

* ``psnr_mask``: PSNR (dB) of the rendered frames inside the clip's person mask, over all frames.
* ``mouth_corr``: Pearson correlation over frames between the teacher's mouth opening (upper to lower
  lip keypoint distance in the clip, pixels) and the model's (the same two landmarks, bound to the
  avatar's Gaussians and projected with the clip camera). 0 when the model's mouth does not move.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avatar_jax.data import index, records, schema
from avatar_jax.geometry import Camera
from avatar_jax.model import landmarks as landmarks_lib
from avatar_jax.train.step import RenderSettings, StepConstants, predict_jit

# Landmark rows (template order: pose 33, then face 478) of the lip keypoints.
UPPER_LIP = 33 + schema.FACE_UPPER_LIP
LOWER_LIP = 33 + schema.FACE_LOWER_LIP


def to_host(x: jax.Array) -> np.ndarray:
    """A jit output as numpy on every process (multi-host outputs may span other hosts' devices)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def lip_binding(avatar, landmark_rest: np.ndarray) -> landmarks_lib.LandmarkBinding:
    rest = np.asarray(landmark_rest)[[UPPER_LIP, LOWER_LIP]]
    part = landmarks_lib.template_landmark_parts()[[UPPER_LIP, LOWER_LIP]]
    return landmarks_lib.build_landmark_binding(np.asarray(avatar.means), np.asarray(avatar.part), rest, part)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def evaluate(graphdef: nnx.GraphDef, params: nnx.State, consts: StepConstants, rs: RenderSettings, root: str,
             *, clips: int, frames: int = 0, landmark_rest: np.ndarray | None = None, split: str = "test") -> dict:
    """Scores on the first ``clips`` clips of ``split`` (``{}`` when the split is empty or ``clips`` is 0),
    each from its first frame over ``frames`` frames (0: the whole clip)."""
    entries = index.clips_in_split(index.load_index(root), split)[:clips]
    if not entries:
        return {}
    binding = lip_binding(consts.avatar, landmark_rest) if landmark_rest is not None else None
    sq_err, mask_sum, open_teacher, open_model = 0.0, 0.0, [], []
    for e in entries:
        reader = records.ClipReader(root, e["clip_id"])
        clip = reader.window(0, min(frames, len(reader)) if frames > 0 else len(reader))
        reader.close()
        meta = reader.meta
        K, viewmat = np.asarray(meta.K, np.float32), np.asarray(meta.viewmat, np.float32)
        out, rgb, _, _ = predict_jit(graphdef, params, consts, jnp.asarray(clip["audio"]), K, viewmat,
                                  len(clip["frame"]), rs)
        rgb = to_host(rgb).astype(np.float64)
        mask = clip["mask"].astype(np.float64)[..., None] / 255.0
        sq_err += float((mask * (rgb - clip["frame"] / 255.0) ** 2).sum())
        mask_sum += 3.0 * float(mask.sum())
        if binding is not None:
            lips = landmarks_lib.landmarks(out.means.astype(jnp.float32), binding)  # (T,2,3)
            uv, _ = Camera(jnp.asarray(viewmat), jnp.asarray(K), rs.width, rs.height).project(lips.reshape(-1, 3))
            uv = to_host(uv).reshape(-1, 2, 2)
            open_model.append(np.linalg.norm(uv[:, 0] - uv[:, 1], axis=-1))
            face = clip["face"]
            lips = face[:, schema.FACE_UPPER_LIP] - face[:, schema.FACE_LOWER_LIP]
            open_teacher.append(np.linalg.norm(lips, axis=-1))
    scores = {"clips": len(entries), "psnr_mask": float(10.0 * np.log10(mask_sum / max(sq_err, 1e-12)))}
    if binding is not None:
        scores["mouth_corr"] = _correlation(np.concatenate(open_teacher), np.concatenate(open_model))
    return scores
