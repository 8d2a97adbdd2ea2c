"""Teacher samples -> the clip records ``prepare`` writes (weak supervision, appendix C).

A sampled clip (uint8 frames from :func:`avatar_jax.teacher.sampler.decode_frames` and the 16 kHz
driving audio) is stored exactly like a prepared video: ``clips/<clip_id>.array_record`` +
``clips/<clip_id>.json`` (:mod:`avatar_jax.data.schema`). Keypoints and person masks come from a
``detector`` (MediaPipe, as ``prepare`` uses); without one they are written as "not detected"
(confidence 0, empty mask). The metadata says where the clip came from: ``source = "teacher:<name>"``,
``extra["synthetic"]`` labels it as generated, never as real footage.
"""

from __future__ import annotations

import numpy as np

from avatar_jax.data import records, schema
from avatar_jax.data.detect import Detections, Detector
from avatar_jax.errors import InputError


def pinhole(width: int, height: int, fov_y_deg: float = 50.0) -> np.ndarray:
    """``K (3, 3)``: a centred pinhole with the given vertical field of view (prepare's assumption)."""
    f = 0.5 * height / np.tan(np.radians(fov_y_deg) / 2.0)
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], np.float64)


def write_teacher_clip(root: str, clip_id: str, subject_id: str, frames: np.ndarray, audio: np.ndarray, *,
                       fps: float = 25.0, teacher: str = "wan2.1", detector: Detector | None = None,
                       transcript: str = "", fov_y_deg: float = 50.0, extra: dict | None = None) -> schema.ClipMeta:
    """Write ``frames (T, H, W, 3) uint8`` with ``audio (S,)`` float32 at 16 kHz as one clip under ``root``."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"teacher frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    t, h, w = frames.shape[:3]
    if detector is not None:
        det = detector.detect(frames)
    else:
        empty = schema.empty_keypoints()
        det = Detections({k: np.repeat(v[None], t, axis=0) for k, v in empty.items()}, np.zeros((t, h, w), np.uint8))
    meta = schema.ClipMeta(
        clip_id=clip_id, subject_id=subject_id, num_frames=t, fps=float(fps), width=w, height=h,
        K=pinhole(w, h, fov_y_deg).tolist(), viewmat=np.eye(4).tolist(), transcript=transcript,
        source=f"teacher:{teacher}",
        extra={"synthetic": "sampled by the audio-driven video-diffusion teacher", "teacher": teacher,
               "keypoints_detected": detector is not None, "fov_y_deg_assumed": fov_y_deg, **(extra or {})})
    return records.write_clip(root, meta, frames, det.masks, np.asarray(audio, np.float32), det.keypoints)
