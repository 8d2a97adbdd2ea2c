"""Motion scores of an audio-driven avatar against its teacher (issue 12's measurements).

All functions take posed Gaussian centres ``(T, N, 3)`` in metres (model and teacher in the same
Gaussian order) and return plain floats, so the demo, ``eval`` and tests print the same numbers:

- :func:`region_errors`: per region, the mean Gaussian distance to the teacher for the model, for an
  audio-blind constant pose (e.g. the median training pose) and for the rest pose, and the share of
  the teacher's motion each explains (``1 - err / err_rest``);
- :func:`lip_gap`: the vertical opening between upper- and lower-lip Gaussians, relative to rest;
- :func:`lip_scores`: amplitude ratio (95th percentiles), correlation, and the mouth-closed share in
  silent frames (gap below 20 % of the teacher's 95th percentile);
- :func:`pause_frames`: frames inside real pauses (no speech for >= 0.2 s, from the TTS/alignment phoneme
  timing, with a margin at both edges): the silence the mouth-closed share is scored on;
- :func:`silent_frames`: frames whose audio RMS is below a share of the clip's loud frames (this also counts
  the short stop closures inside words, where a speaking mouth is not closed, so it is not used for scoring);
- :func:`drift`: mean displacement from rest over the first and last ``window`` frames, and the peak;
- :func:`rigid_fit` and :func:`in_head_frame`: every frame seen from the head's own frame (the rigid motion
  of head Gaussians that only the neck moves, fitted per frame), so the face's expression (jaw, lips, lids)
  is scored apart from the head's gestures (nods, turns), as talking-head papers score lips.
"""

from __future__ import annotations

import numpy as np


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)


def region_errors(pred: np.ndarray, target: np.ndarray, constant: np.ndarray, rest: np.ndarray,
                  region: np.ndarray, names: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``pred, target (T,N,3)``, ``constant, rest (N,3)``, ``names``: region name -> region ids ->
    ``{name: {model_mm, constant_mm, rest_mm, explained, constant_explained}}``."""
    out = {}
    for name, ids in names.items():
        sel = np.isin(region, ids)
        if not sel.any():
            continue
        e_model = float(_dist(pred[:, sel], target[:, sel]).mean())
        e_const = float(_dist(constant[None, sel], target[:, sel]).mean())
        e_rest = float(_dist(rest[None, sel], target[:, sel]).mean())
        out[name] = dict(model_mm=1e3 * e_model, constant_mm=1e3 * e_const, rest_mm=1e3 * e_rest,
                         explained=1.0 - e_model / e_rest if e_rest > 0 else 0.0,
                         constant_explained=1.0 - e_const / e_rest if e_rest > 0 else 0.0)
    return out


def lip_gap(means: np.ndarray, rest: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Opening ``(T,)`` in metres: (upper-lip mean height - lower-lip mean height) minus the rest gap."""
    gap = means[:, upper, 1].mean(1) - means[:, lower, 1].mean(1)
    return gap - (rest[upper, 1].mean() - rest[lower, 1].mean())


def silent_frames(audio: np.ndarray, num_frames: int, samples_per_frame: int, share: float = 0.05) -> np.ndarray:
    """``(T,)`` bool: frame RMS below ``share`` of the clip's 95th-percentile frame RMS."""
    a = np.zeros(num_frames * samples_per_frame, np.float64)
    a[:min(a.size, audio.size)] = audio[:a.size]
    rms = np.sqrt((a.reshape(num_frames, samples_per_frame) ** 2).mean(1))
    return rms < share * np.percentile(rms, 95)


def pause_frames(speech: list[tuple[float, float]], num_frames: int, fps: float, *, min_pause: float = 0.2,
                 margin: float = 0.1) -> np.ndarray:
    """``(T,)`` bool: frames whose whole time window ``[t/fps, (t+1)/fps)`` lies inside a pause.

    ``speech``: ``(start, end)`` seconds of every spoken (non-pause) phoneme. A pause is a stretch of at
    least ``min_pause`` s that no phoneme covers (before the first, between two, after the last, up to
    ``num_frames / fps``); ``margin`` s at each edge is left out, so coarticulation into and out of a
    pause (the mouth still closing or already opening) is not scored as silence."""
    if min_pause < 2 * margin:
        raise ValueError(f"min_pause ({min_pause} s) must be at least twice the margin ({margin} s)")
    end_time = num_frames / fps
    spans = sorted((float(a), float(b)) for a, b in speech if b > a)
    gaps, covered = [], 0.0
    for a, b in spans:
        if a > covered:
            gaps.append((covered, a))
        covered = max(covered, b)
    if covered < end_time:
        gaps.append((covered, end_time))
    t0 = np.arange(num_frames) / fps
    out = np.zeros(num_frames, bool)
    for a, b in gaps:
        if b - a >= min_pause:
            out |= (t0 >= a + margin - 1e-9) & (t0 + 1.0 / fps <= b - margin + 1e-9)
    return out


def lip_scores(gap_model: np.ndarray, gap_teacher: np.ndarray, silent: np.ndarray) -> dict[str, float]:
    """Amplitude ratio, correlation and mouth-closed share in silence of the lip gap ``(T,)``."""
    p95 = float(np.percentile(gap_teacher, 95))
    closed = gap_model < 0.2 * p95
    corr = float(np.corrcoef(gap_model, gap_teacher)[0, 1]) if gap_model.std() > 1e-12 else 0.0
    return dict(amplitude_ratio=float(np.percentile(gap_model, 95)) / p95 if p95 > 0 else 0.0,
                correlation=corr, teacher_p95_mm=1e3 * p95,
                closed_in_silence=float(closed[silent].mean()) if silent.any() else float("nan"),
                teacher_closed_in_silence=float((gap_teacher < 0.2 * p95)[silent].mean()) if silent.any()
                else float("nan"), silent_frames=int(silent.sum()))


def drift(means: np.ndarray, rest: np.ndarray, window: int) -> dict[str, float]:
    """Mean displacement from rest (mm) over the first and last ``window`` frames, their ratio, the peak."""
    disp = _dist(means, rest[None])  # (T, N)
    first, last = float(disp[:window].mean()), float(disp[-window:].mean())
    return dict(first_mm=1e3 * first, last_mm=1e3 * last, ratio=last / first if first > 0 else float("inf"),
                max_mm=1e3 * float(disp.max()))


def rigid_fit(rest: np.ndarray, posed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rigid motion (Kabsch) from ``rest (N,3)`` to each frame of ``posed (T,N,3)``:
    ``R (T,3,3)``, ``t (T,3)`` with ``posed ~ rest @ R^T + t``."""
    x = np.asarray(rest, np.float64)
    y = np.asarray(posed, np.float64)
    xm, ym = x.mean(0), y.mean(1)
    cov = np.einsum("ni,tnj->tij", x - xm, y - ym[:, None])  # sum of (x - xm)(y - ym)^T
    u, _, vt = np.linalg.svd(cov)
    flip = np.sign(np.linalg.det(u @ vt))  # a reflection is not a motion
    u[:, :, 2] *= flip[:, None]
    r = np.swapaxes(u @ vt, 1, 2)  # R = V U^T
    return r, ym - np.einsum("tij,j->ti", r, xm)


def in_head_frame(means: np.ndarray, rest: np.ndarray, head: np.ndarray) -> np.ndarray:
    """``means (T,N,3)`` in the head's frame: the rigid motion that best carries the ``head`` Gaussians
    (indices or mask; ones only the neck moves) from ``rest (N,3)`` to each frame, undone. A still head
    gives back ``means``; a face that only turns with the head gives back ``rest``."""
    r, t = rigid_fit(np.asarray(rest)[head], means[:, head])
    return np.einsum("tji,tnj->tni", r, np.asarray(means, np.float64) - t[:, None])
