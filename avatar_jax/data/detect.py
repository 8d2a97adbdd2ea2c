"""Person detectors for ``prepare``: a Protocol, and MediaPipe Holistic (the default) behind it.

A detector sees the frames of one clip at once (so it may track) and returns keypoints in the
record layout of :mod:`avatar_jax.data.schema` (pixels of the frames it was given) and person masks.
Tests inject their own detector; anything with a matching ``detect`` method works.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from typing import Protocol

import numpy as np

from avatar_jax.data import schema
from avatar_jax.errors import AvatarJaxError


@dataclasses.dataclass
class Detections:
    """``keypoints``: the schema's keypoint fields with a leading ``T`` axis; ``masks (T,H,W) uint8``."""

    keypoints: dict[str, np.ndarray]
    masks: np.ndarray

    def person_frames(self, min_mask_fraction: float = 0.002) -> np.ndarray:
        """``(T,) bool``: a person is seen (some body keypoint or enough mask) in frame t."""
        seen_kp = (self.keypoints["body_conf"] > 0.5).any(1) | (self.keypoints["face_conf"] > 0.5).any(1)
        seen_mask = (self.masks > 127).mean((1, 2)) >= min_mask_fraction
        return seen_kp | seen_mask


class Detector(Protocol):
    def detect(self, frames: np.ndarray) -> Detections:
        """``frames (T,H,W,3) uint8`` of one clip -> :class:`Detections` in the same pixel frame."""
        ...


class MediaPipeDetector:
    """MediaPipe Holistic (pose 33, face 478, hands 2x21, segmentation) in video mode.

    Runs :mod:`avatar_jax.data.mediapipe_video_worker` in the MediaPipe interpreter found by
    :func:`avatar_jax.personalize.detect.find_interpreter` (explicit path, ``$AVATAR_JAX_MEDIAPIPE_PYTHON``,
    ``.venv-mediapipe``), because MediaPipe's protobuf < 5 cannot share the main environment with grain.
    """

    def __init__(self, interpreter: str = "", timeout: float = 3600.0):
        from avatar_jax.personalize.detect import find_interpreter

        self.python = find_interpreter(interpreter)
        self.timeout = timeout

    def detect(self, frames: np.ndarray) -> Detections:
        t = frames.shape[0]
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = os.path.join(tmp, "frames.npy"), os.path.join(tmp, "out.npz")
            np.save(src, np.ascontiguousarray(frames, np.uint8))
            worker = os.path.join(os.path.dirname(__file__), "mediapipe_video_worker.py")
            env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2")
            env.pop("PYTHONPATH", None)
            proc = subprocess.run([self.python, worker, src, dst], capture_output=True, text=True,
                                  timeout=self.timeout, env=env)
            if proc.returncode != 0:
                raise AvatarJaxError(f"MediaPipe failed: {proc.stderr.strip().splitlines()[-1:]}")
            with np.load(dst) as z:
                out = {k: z[k] for k in z.files}
        kp = {k: np.zeros((t, *s), np.float32) for k, s in schema.KEYPOINT_SHAPES.items()}
        kp["body"], kp["body_conf"] = out["pose"][..., :2], out["pose"][..., 2]
        kp["face"], kp["face_conf"] = out["face"][..., :2], out["face"][..., 2]
        kp["hands"] = np.stack([out["left_hand"][..., :2], out["right_hand"][..., :2]], 1)
        kp["hands_conf"] = np.stack([out["left_hand"][..., 2], out["right_hand"][..., 2]], 1)
        return Detections(kp, out["mask"])
