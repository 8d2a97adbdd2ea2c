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


_PAD = 16  # held-out clips are padded to a multiple of this many frames


def to_host(x: jax.Array) -> np.ndarray:
    """A jit output as numpy on every process (multi-host outputs may span other hosts' devices)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def lip_binding(avatar, landmark_rest: np.ndarray, region: np.ndarray | None = None) -> landmarks_lib.LandmarkBinding:
    """The two lip landmarks bound to the avatar as the training loss binds them (each within its lip)."""
    from avatar_jax.train.avatar import landmark_binding

    return landmark_binding(avatar, landmark_rest, region, 4, rows=np.asarray([UPPER_LIP, LOWER_LIP]))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two openings in pixels; 0 when either moves less than a thousandth of a pixel
    (a still mouth: float noise would otherwise give any value, or NaN)."""
    if a.std() < 1e-3 or b.std() < 1e-3:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def evaluate(graphdef: nnx.GraphDef, params: nnx.State, consts: StepConstants, rs: RenderSettings, root: str,
             *, clips: int, frames: int = 0, landmark_rest: np.ndarray | None = None, split: str = "test",
             region: np.ndarray | None = None) -> dict:
    """Scores on the first ``clips`` clips of ``split`` (``{}`` when the split is empty or ``clips`` is 0),
    each from its first frame over ``frames`` frames (0: the whole clip)."""
    entries = index.clips_in_split(index.load_index(root), split)[:clips]
    if not entries:
        return {}
    binding = lip_binding(consts.avatar, landmark_rest, region) if landmark_rest is not None else None
    sq_err, mask_sum, open_teacher, open_model = 0.0, 0.0, [], []
    clips_read = []
    for e in entries:
        reader = records.ClipReader(root, e["clip_id"])
        clips_read.append((reader.window(0, min(frames, len(reader)) if frames > 0 else len(reader)), reader.meta))
        reader.close()
    # Every clip runs padded with silence to one length, so one compiled program scores them all (a compile per
    # clip length costs minutes on CPU). The motion is causal; only the audio encoder's local context lets the
    # last few frames hear the padded silence, as a real clip followed by a pause would.
    length = -(-max(len(c["frame"]) for c, _ in clips_read) // _PAD) * _PAD
    for clip, meta in clips_read:
        n = len(clip["frame"])
        per_frame = clip["audio"].size / n
        audio = np.pad(clip["audio"], (0, int(round(length * per_frame)) - clip["audio"].size))
        K, viewmat = np.asarray(meta.K, np.float32), np.asarray(meta.viewmat, np.float32)
        out, rgb, _, _ = predict_jit(graphdef, params, consts, jnp.asarray(audio), K, viewmat, length, rs)
        out = jax.tree.map(lambda x, n=n: x[:n], out)
        rgb = to_host(rgb[:n]).astype(np.float64)
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
