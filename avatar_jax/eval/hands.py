"""Hand keypoint confidence and variance (HKC / HKV, paper 4.1) with MediaPipe Hands.

- HKC: the mean MediaPipe hand confidence over the hands detected in the frames (higher: hands that
  look like hands). Frames where a hand is not found do not enter the mean; ``detection_rate`` (found
  hand slots / all slots) says how often that happened.
- HKV: the standard deviation over time of each detected hand keypoint's position, in fractions of the
  image height, averaged over keypoints, x / y and the two hands (higher: more hand motion).
  A hand needs at least two detections to have a spread.

:func:`hand_keypoint_stats` is the arithmetic on given keypoints; :func:`hand_metrics` detects them on
frames first (the project's MediaPipe interpreter, models inside the wheel, no download).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from avatar_jax.errors import InputError
from avatar_jax.eval import mediapipe_runner


@dataclasses.dataclass(frozen=True)
class HandMetrics:
    hkc: float  # NaN when no hand was found in any frame
    hkv: float  # NaN when no hand was found in two frames
    detection_rate: float


def hand_keypoint_stats(hands: np.ndarray, score: np.ndarray, height: int) -> HandMetrics:
    """HKC / HKV from ``hands (T,2,21,2)`` pixels and ``score (T,2)`` (0 = not found) in ``height``-pixel frames."""
    hands, score = np.asarray(hands, np.float64), np.asarray(score, np.float64)
    if hands.ndim != 4 or hands.shape[1:] != (2, 21, 2) or score.shape != hands.shape[:2]:
        raise InputError(f"expected hands (T,2,21,2) and scores (T,2), got {hands.shape} and {score.shape}")
    if height <= 0:
        raise InputError(f"image height must be positive, got {height}")
    found = score > 0
    hkc = float(score[found].mean()) if found.any() else float("nan")
    spreads = []
    for side in range(2):
        seen = found[:, side]
        if seen.sum() >= 2:
            spreads.append(hands[seen, side].std(axis=0).mean() / height)  # over time, then keypoints and x/y
    hkv = float(np.mean(spreads)) if spreads else float("nan")
    return HandMetrics(hkc=hkc, hkv=hkv, detection_rate=float(found.mean()))


def detect_hands(frames: np.ndarray, interpreter: str = "") -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe Hands on ``frames (T,H,W,3)`` -> ``hands (T,2,21,2)`` pixels, ``score (T,2)``.

    Slot 0 is the subject's left hand; a score of 0 means the hand was not found.
    """
    out = mediapipe_runner.run("hands", frames, interpreter)
    return out["hands"], out["score"]


def hand_metrics(frames: np.ndarray, interpreter: str = "") -> HandMetrics:
    """HKC / HKV of ``frames (T,H,W,3)`` (uint8, or float in [0,1])."""
    hands, score = detect_hands(frames, interpreter)
    return hand_keypoint_stats(hands, score, np.asarray(frames).shape[1])
