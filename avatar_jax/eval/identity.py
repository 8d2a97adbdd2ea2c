"""Identity similarity (CSIM, paper 4.1): cosine similarity of dlib's 128-D face descriptors.

The descriptor is dlib's ResNet face recognition model (``dlib_face_recognition_resnet_model_v1.dat``)
on a face chip aligned by the 5-point shape predictor (``shape_predictor_5_face_landmarks.dat``), the
face found by dlib's HOG detector (built into dlib, no file). The two model files ship inside the
``face-recognition-models`` wheel and dlib inside ``dlib-bin`` (``pip install 'avatar-jax[eval]'``), so
nothing is downloaded; a different folder holding the same two files can be given instead.

CSIM of a video = the mean over its frames of cos(reference descriptor, frame descriptor); frames in
which no face is found are left out and counted (``detection_rate``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np

from avatar_jax.errors import AvatarJaxError, InputError

RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"
_INSTALL = "pip install 'avatar-jax[eval]' (dlib-bin and face-recognition-models)"


def default_models_dir() -> str:
    """The ``models`` folder of the installed ``face-recognition-models`` package (found without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise AvatarJaxError(f"CSIM needs the dlib face models: {_INSTALL}, or pass models_dir=DIR holding "
                             f"{RECOGNITION_FILE} and {SHAPE_FILE}")
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


@dataclasses.dataclass(frozen=True)
class IdentityResult:
    csim: float  # NaN when no frame has a face
    per_frame: np.ndarray  # (T,) cosine similarity, NaN where no face was found
    detection_rate: float


class FaceEmbedder:
    """dlib face detector + 5-point alignment + 128-D descriptor; load once, embed many images."""

    def __init__(self, models_dir: str | None = None, upsample: int = 1):
        try:
            import dlib
        except ImportError:
            raise AvatarJaxError(f"CSIM needs dlib: {_INSTALL}") from None
        models_dir = models_dir or default_models_dir()
        paths = {name: os.path.join(models_dir, name) for name in (RECOGNITION_FILE, SHAPE_FILE)}
        missing = [name for name, p in paths.items() if not os.path.isfile(p)]
        if missing:
            raise InputError(f"dlib face model files missing in {models_dir}: {', '.join(missing)} "
                             f"(they ship in the face-recognition-models wheel: {_INSTALL})")
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(paths[SHAPE_FILE])
        self._recognition = dlib.face_recognition_model_v1(paths[RECOGNITION_FILE])
        self.upsample = upsample  # detector upsampling: finds faces down to ~40 px in 256 px frames

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        """``image (H,W,3)`` uint8 (or float in [0,1]) -> descriptor ``(128,)`` of its largest face, or None."""
        image = _as_uint8(image)
        faces = self._detector(image, self.upsample)
        if len(faces) == 0:
            return None
        face = max(faces, key=lambda r: r.area())
        shape = self._shape(image, face)
        return np.asarray(self._recognition.compute_face_descriptor(image, shape), np.float64)


def _as_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise InputError(f"expected an RGB image (H,W,3), got shape {image.shape}")
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.floating):
            raise InputError(f"images must be uint8 or float in [0,1], got {image.dtype}")
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def csim(reference: np.ndarray, frames: np.ndarray, embedder: FaceEmbedder | None = None) -> IdentityResult:
    """CSIM of ``frames (T,H,W,3)`` against the ``reference (H,W,3)`` photo's face."""
    embedder = embedder or FaceEmbedder()
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise InputError(f"frames must be (T,H,W,3), got shape {frames.shape}")
    ref = embedder.embed(reference)
    if ref is None:
        raise InputError("no face found in the reference image; CSIM needs the subject's face in it")
    per_frame = np.full(len(frames), np.nan)
    for t, frame in enumerate(frames):
        d = embedder.embed(frame)
        if d is not None:
            per_frame[t] = cosine(ref, d)
    found = np.isfinite(per_frame)
    return IdentityResult(csim=float(per_frame[found].mean()) if found.any() else float("nan"),
                          per_frame=per_frame, detection_rate=float(found.mean()))
