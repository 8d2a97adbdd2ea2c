"""Offline lip-sync measure that needs no weights: audio loudness vs. mouth opening, lag and correlation.

Per video frame ``t`` (25 fps by default, audio at 16 kHz, DESIGN.md):

- the audio envelope is the RMS of frame t's own samples ``[round(t sr/fps), round((t+1) sr/fps))``;
- the mouth opening is the inner-lip gap (face mesh points 13 / 14) over the mouth width (61 / 291),
  from MediaPipe Face Mesh on the frames or from given landmarks (NaN where no face was found).

Both are standardised and compared by Pearson correlation at every lag ``k`` in ``[-N, N]``: ``k > 0``
means the mouth follows the audio by k frames (opening[t + k] goes with audio[t]). The lag with the
highest correlation is the sync offset (0 when in sync); the correlation there says how tightly the
mouth follows the speech. It is a proxy for SyncNet's offset / confidence, not a replacement.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from avatar_jax.data import schema
from avatar_jax.errors import InputError
from avatar_jax.eval import mediapipe_runner


@dataclasses.dataclass(frozen=True)
class SyncResult:
    lag: int  # frames; > 0: the mouth is late
    correlation: float  # at ``lag``
    correlation_at_zero: float
    lags: np.ndarray  # (2N+1,)
    correlations: np.ndarray  # (2N+1,) NaN where fewer than 3 frames overlap


def audio_envelope(audio: np.ndarray, num_frames: int, fps: float = 25.0,
                   sample_rate: int = schema.SAMPLE_RATE) -> np.ndarray:
    """RMS ``(T,)`` of each frame's audio span (samples past the end count as silence)."""
    audio = np.asarray(audio, np.float64)
    if audio.ndim != 1:
        raise InputError(f"audio must be mono (S,), got shape {audio.shape}")
    if num_frames < 1 or fps <= 0:
        raise InputError(f"need num_frames >= 1 and fps > 0, got {num_frames} and {fps}")
    bounds = schema.audio_bounds(np.arange(num_frames + 1), fps, sample_rate)
    padded = np.concatenate([audio, np.zeros(max(0, int(bounds[-1]) - len(audio)))])
    energy = np.add.reduceat(padded[: bounds[-1]] ** 2, bounds[:-1])  # sum of squares per span
    return np.sqrt(energy / np.diff(bounds)).astype(np.float64)


def mouth_opening(face: np.ndarray, found: np.ndarray | None = None) -> np.ndarray:
    """Inner-lip gap over mouth width ``(T,)`` from face-mesh landmarks ``(T,478,2)``; NaN where not ``found``."""
    face = np.asarray(face, np.float64)
    if face.ndim != 3 or face.shape[1:] != (schema.NUM_FACE, 2):
        raise InputError(f"face landmarks must be (T,{schema.NUM_FACE},2), got {face.shape}")
    gap = np.linalg.norm(face[:, schema.FACE_UPPER_LIP] - face[:, schema.FACE_LOWER_LIP], axis=-1)
    width = np.linalg.norm(face[:, schema.FACE_MOUTH_LEFT] - face[:, schema.FACE_MOUTH_RIGHT], axis=-1)
    ok = width > 1e-6 if found is None else (np.asarray(found).astype(bool) & (width > 1e-6))
    return np.where(ok, gap / np.where(ok, width, 1.0), np.nan)


def lag_correlation(envelope: np.ndarray, opening: np.ndarray, max_lag: int = 5) -> SyncResult:
    """Pearson correlation of ``envelope[t]`` with ``opening[t + k]`` for ``k`` in ``[-max_lag, max_lag]``."""
    env, mouth = np.asarray(envelope, np.float64), np.asarray(opening, np.float64)
    if env.shape != mouth.shape or env.ndim != 1:
        raise InputError(f"envelope and opening must be (T,) of one length, got {env.shape} and {mouth.shape}")
    if max_lag < 0 or max_lag >= len(env) - 2:
        raise InputError(f"max_lag must be in [0, T-3] = [0, {len(env) - 3}], got {max_lag}")
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.full(len(lags), np.nan)
    for i, k in enumerate(lags):
        a = env[max(0, -k): len(env) - max(0, k)]
        b = mouth[max(0, k): len(mouth) - max(0, -k)]
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() >= 3 and a[ok].std() > 0 and b[ok].std() > 0:
            corr[i] = np.corrcoef(a[ok], b[ok])[0, 1]
    if not np.isfinite(corr).any():
        raise InputError("no lag has 3 frames with a face and varying audio and mouth: cannot measure sync")
    best = int(np.nanargmax(corr))
    return SyncResult(lag=int(lags[best]), correlation=float(corr[best]), correlation_at_zero=float(corr[max_lag]),
                      lags=lags, correlations=corr)


def offline_sync(audio: np.ndarray, *, frames: np.ndarray | None = None, face: np.ndarray | None = None,
                 found: np.ndarray | None = None, fps: float = 25.0, sample_rate: int = schema.SAMPLE_RATE,
                 max_lag: int = 5, interpreter: str = "") -> SyncResult:
    """Sync of ``audio (S,)`` with ``frames (T,H,W,3)`` (Face Mesh is run on them) or given ``face (T,478,2)``."""
    if (frames is None) == (face is None):
        raise InputError("offline_sync needs exactly one of frames (to detect the mouth) or face landmarks")
    if frames is not None:
        out = mediapipe_runner.run("face", frames, interpreter)
        face, found = out["face"], out["found"]
    opening = mouth_opening(face, found)
    return lag_correlation(audio_envelope(audio, len(opening), fps, sample_rate), opening, max_lag)
