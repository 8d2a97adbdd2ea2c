"""Head shape where the photo says nothing about it: skin without fins below the ears, hair round the back.

Why (issue 17): seen from behind at 120-157.5°, the astronaut avatar was taken for a face by MediaPipe's
face detector, even with the whole head painted one flat colour. The outline did it, for two reasons:
- the photometric fit pushed the underside of the jaw 4 cm out along its sideways/downward normals
  (to cover the neck's skin in the photo): a thin fin beside the jaw that, from behind, reads as a chin;
- the template is bald: from behind, the skull sits on a thin neck with the jaw sticking out beside it,
  the outline of a face in profile. A real head from behind shows hair that hangs straight down from
  the widest part of the skull and hides the jaw and the hollow of the nape.

So (1) skin below the ears may move along its normal and slide only a little (``offset_bounds``): it has
no loose volume, and (2) the unseen back of the head gets a hanging hair curtain (``hair_curtain``).
"""

from __future__ import annotations

import numpy as np

from avatar_jax.body import keypoints as kp
from avatar_jax.body import parts

EAR_L, EAR_R = 7, 8  # MediaPipe pose landmarks


def ears(template, vertices: np.ndarray) -> np.ndarray:
    """``(2,3)`` the template's ear landmarks (left, right) on ``vertices (V,3)`` (canonical, metres)."""
    marks = kp.regress(np.asarray(vertices), template.keypoint_vertices, template.keypoint_weights)
    return np.asarray(marks[kp.POSE][[EAR_L, EAR_R]], np.float64)


def offset_bounds(means: np.ndarray, part: np.ndarray, ear_points: np.ndarray, max_offset: float,
                  max_slide: float, below_ears: float = 0.015) -> tuple[np.ndarray, np.ndarray]:
    """Per-Gaussian bounds (metres) ``(N,)`` on the normal offset and ``(N,)`` on the slide: ``below_ears``
    on both for head Gaussians under the ears' height (jaw, chin, neck), ``max_offset`` / ``max_slide``
    elsewhere (hair, clothes). Leaving the forward-facing face free to slide, or free along its normal,
    let specks of the chin float off beside the jaw again (a face found from behind at 142.5°)."""
    low = (np.asarray(part) == parts.HEAD) & (np.asarray(means)[:, 1] < ear_points[:, 1].mean())
    return (np.where(low, min(below_ears, max_offset), max_offset).astype(np.float32),
            np.where(low, min(below_ears, max_slide), max_slide).astype(np.float32))


def hair_curtain(means: np.ndarray, part: np.ndarray, seen: np.ndarray, ear_points: np.ndarray, *,
                 thickness: float = 0.015, drop: float = 0.08, start_deg: float = 80.0, ramp_deg: float = 20.0,
                 max_push: float = 0.04, bin_deg: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Hang hair round the unseen back of the head: ``means (N,3)`` canonical (the body faces -z) ->
    (new means ``(N,3)``, ``weight (N,)`` in [0,1], how much of the curtain each Gaussian took).

    Around the vertical axis through the ears' midpoint, a head Gaussian at angle ``theta`` (0 = the nose,
    180 = the back) and height ``y`` is pushed horizontally out to the widest radius the head reaches at
    that angle anywhere above it, plus ``thickness``: hair falls straight down from the skull's widest
    point. Only unseen Gaussians move, only outwards, at most ``max_push``; the curtain reaches ``drop``
    below the ears and, round the sides, starts at ``start_deg`` (full from ``start_deg + ramp_deg``,
    about the ears; seen Gaussians, the face among them, never move)."""
    means = np.asarray(means, np.float64)
    centre = ear_points.mean(0)
    rel = means[:, [0, 2]] - centre[[0, 2]]
    r = np.linalg.norm(rel, axis=1)
    theta = np.degrees(np.arctan2(rel[:, 0], -rel[:, 1]))  # 0 in front, +-180 behind
    back = np.abs(theta)
    bottom = centre[1] - drop
    head = (np.asarray(part) == parts.HEAD) & (back > start_deg) & (means[:, 1] > bottom)
    # The widest radius at or above each Gaussian's height, per angle bin: a running max from the top.
    bins = np.floor((theta + 180.0) / bin_deg).astype(np.int64)
    widest = r.copy()
    for b in np.unique(bins[head]):
        idx = np.nonzero(head & (bins == b))[0]
        idx = idx[np.argsort(-means[idx, 1], kind="stable")]
        widest[idx] = np.maximum.accumulate(r[idx])
    weight = (np.clip((back - start_deg) / ramp_deg, 0, 1) * np.clip((means[:, 1] - bottom) / 0.02, 0, 1)
              * (head & ~np.asarray(seen, bool)))
    push = np.minimum(np.maximum(widest + thickness - r, 0.0), max_push) * weight
    out = means.copy()
    out[:, [0, 2]] += rel / np.maximum(r, 1e-9)[:, None] * push[:, None]
    return out.astype(np.float32), np.where(push > 0, weight, 0.0).astype(np.float32)


def hair_colour(colors: np.ndarray, means: np.ndarray, part: np.ndarray, ear_points: np.ndarray) -> np.ndarray:
    """``(C,)`` the colour of the back of the skull above the ears (what the appearance fill gave it:
    hair where the photo shows hair, skin on a bald head): the median of those head Gaussians."""
    centre = ear_points.mean(0)
    pool = ((np.asarray(part) == parts.HEAD) & (means[:, 1] > centre[1])
            & (means[:, 2] > centre[2] + 0.02))
    return np.median(colors[pool] if pool.sum() >= 5 else colors[np.asarray(part) == parts.HEAD], axis=0)
