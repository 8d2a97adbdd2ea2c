"""Run :mod:`avatar_jax.eval.mediapipe_eval_worker` (Hands or Face Mesh) on frames in the MediaPipe interpreter.

(Not named ``mediapipe.py``: the worker runs as a script from this folder and must import the real mediapipe.)

The interpreter is found like everywhere else in the project
(:func:`avatar_jax.personalize.detect.find_interpreter`: explicit path, ``$AVATAR_JAX_MEDIAPIPE_PYTHON``,
``.venv-mediapipe``); MediaPipe ships its models inside the wheel, so nothing is downloaded.
"""

from __future__ import annotations

import os

import numpy as np

from avatar_jax.errors import InputError


def check_frames(frames: np.ndarray) -> np.ndarray:
    """``frames (T,H,W,3)`` uint8, or float in [0,1] (converted) -> uint8; a clear error otherwise."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise InputError(f"expected frames (T,H,W,3) with T >= 1, got shape {frames.shape}")
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise InputError(f"frames must be uint8 or float in [0,1], got {frames.dtype}")
    return np.clip(np.round(frames * 255.0), 0, 255).astype(np.uint8)


def run(mode: str, frames: np.ndarray, interpreter: str = "", timeout: float = 3600.0) -> dict[str, np.ndarray]:
    """``mode`` in {"hands", "face"} over ``frames (T,H,W,3)`` -> the worker's arrays (see its docstring)."""
    from avatar_jax.personalize.detect import run_worker_script

    worker = os.path.join(os.path.dirname(__file__), "mediapipe_eval_worker.py")
    return run_worker_script(worker, check_frames(frames), [mode], interpreter, timeout, what=f"MediaPipe ({mode})")
