"""What a prepared clip is: per-frame records plus one metadata file.

A dataset directory holds ``clips/<clip_id>.array_record`` (record ``t`` = frame ``t``, encoded by
:mod:`avatar_jax.data.codec`) and ``clips/<clip_id>.json`` (:class:`ClipMeta`), and ``index.json``
(the clip list with the identity-aware split, :mod:`avatar_jax.data.index`).

Per-frame fields (``H x W`` is the clip's stored size, keypoints in pixels of that image, OpenCV
convention, so a keypoint at the centre of pixel (i, j) is ``(u, v) = (j + 0.5, i + 0.5)``):

=============  ==================  ===========================================================
``frame``      ``(H, W, 3) uint8``  RGB
``mask``       ``(H, W) uint8``     person mask, 0..255 (soft)
``audio``      ``(S_t,) float32``   16 kHz samples ``[round(t·sr/fps), round((t+1)·sr/fps))``
``face``       ``(478, 2) f32``     MediaPipe face mesh layout (468 mesh + 10 iris)
``face_conf``  ``(478,) f32``       confidence in [0, 1]; 0 = not detected / not defined
``hands``      ``(2, 21, 2) f32``   subject's left hand first, MediaPipe hand layout
``hands_conf`` ``(2, 21) f32``
``body``       ``(33, 2) f32``      MediaPipe pose layout
``body_conf``  ``(33,) f32``
``index``      ``() int32``         the frame number t (a consistency check)
=============  ==================  ===========================================================

So frame ``t`` and its audio span cover the same time ``[t/fps, (t+1)/fps)`` (DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from avatar_jax.errors import InputError

NUM_FACE, NUM_HAND, NUM_BODY = 478, 21, 33
SAMPLE_RATE = 16000
FRAME_FIELDS = ("frame", "mask", "audio", "face", "face_conf", "hands", "hands_conf", "body", "body_conf", "index")
KEYPOINT_SHAPES = {"face": (NUM_FACE, 2), "face_conf": (NUM_FACE,), "hands": (2, NUM_HAND, 2),
                   "hands_conf": (2, NUM_HAND), "body": (NUM_BODY, 2), "body_conf": (NUM_BODY,)}

# A few MediaPipe indices the synthetic rig and the tests refer to.
FACE_UPPER_LIP, FACE_LOWER_LIP, FACE_MOUTH_LEFT, FACE_MOUTH_RIGHT = 13, 14, 291, 61
FACE_NOSE_TIP = 1
FACE_LEFT_EYE_UPPER, FACE_LEFT_EYE_LOWER, FACE_RIGHT_EYE_UPPER, FACE_RIGHT_EYE_LOWER = 386, 374, 159, 145
BODY_NOSE, BODY_LEFT_EYE, BODY_RIGHT_EYE, BODY_MOUTH_LEFT, BODY_MOUTH_RIGHT = 0, 2, 5, 9, 10
BODY_LEFT_SHOULDER, BODY_RIGHT_SHOULDER, BODY_LEFT_ELBOW, BODY_RIGHT_ELBOW = 11, 12, 13, 14
BODY_LEFT_WRIST, BODY_RIGHT_WRIST = 15, 16
HAND_WRIST, HAND_MIDDLE_MCP = 0, 9


def audio_bounds(t: int | np.ndarray, fps: float, sample_rate: int = SAMPLE_RATE):
    """First sample of frame ``t``: ``round(t·sr/fps)``; frame t's audio is ``[bounds(t), bounds(t+1))``."""
    return np.round(np.asarray(t, np.float64) * sample_rate / fps).astype(np.int64)


@dataclasses.dataclass
class ClipMeta:
    """Everything about a clip that is not per frame. ``K (3,3)`` and ``viewmat (4,4)`` are lists."""

    clip_id: str
    subject_id: str
    num_frames: int
    fps: float
    width: int
    height: int
    K: list
    viewmat: list
    sample_rate: int = SAMPLE_RATE
    transcript: str = ""
    source: str = ""
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(audio_bounds(self.num_frames, self.fps, self.sample_rate))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> ClipMeta:
        d = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path: str) -> ClipMeta:
        try:
            with open(path) as f:
                return cls.from_json(f.read())
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"cannot read clip metadata {path!r}: {e}") from e


def clip_paths(root: str, clip_id: str) -> tuple[str, str]:
    """``(records path, metadata path)`` of a clip inside dataset directory ``root``."""
    base = os.path.join(root, "clips", clip_id)
    return base + ".array_record", base + ".json"


def empty_keypoints() -> dict[str, np.ndarray]:
    """All keypoint fields at zero with zero confidence (nothing detected)."""
    return {k: np.zeros(s, np.float32) for k, s in KEYPOINT_SHAPES.items()}


def check_frame(rec: dict[str, np.ndarray], height: int, width: int) -> None:
    """Raise InputError unless ``rec`` has every field with the documented shape and dtype."""
    missing = [k for k in FRAME_FIELDS if k not in rec]
    if missing:
        raise InputError(f"frame record lacks {missing}")
    expect = {"frame": ((height, width, 3), np.uint8), "mask": ((height, width), np.uint8)}
    expect.update({k: (s, np.float32) for k, s in KEYPOINT_SHAPES.items()})
    for k, (shape, dtype) in expect.items():
        a = rec[k]
        if a.shape != shape or a.dtype != dtype:
            raise InputError(f"frame field {k!r}: expected {shape} {np.dtype(dtype)}, got {a.shape} {a.dtype}")
    if rec["audio"].ndim != 1 or rec["audio"].dtype != np.float32:
        raise InputError(f"frame field 'audio' must be (S,) float32, got {rec['audio'].shape} {rec['audio'].dtype}")
