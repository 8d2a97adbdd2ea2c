"""Where particles go (paper 3.2): dense on lips (upper and lower apart), eyelids and fingers, sparse elsewhere.

Gaussians carry a region label (from the body template or the rig: ``REGIONS``); each region gets its
configured number of particles by farthest-point sampling over its own Gaussians, and a Gaussian binds
only to particles of its own region. That is what lets the deformer open a mouth: with plain
nearest-particle binding the upper and lower lip (millimetres apart) share their particles.
"""

from __future__ import annotations

import numpy as np

from avatar_jax.model.canonical import PART_BODY, PART_FACE, PART_HANDS

REGIONS = ("body", "face", "upper_lip", "lower_lip", "eyelids", "hands")
REGION_PART = {"body": PART_BODY, "face": PART_FACE, "upper_lip": PART_FACE, "lower_lip": PART_FACE,
               "eyelids": PART_FACE, "hands": PART_HANDS}


def farthest_points(points: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Indices of ``count`` points spread over ``points (N,3)`` (greedy farthest-point sampling)."""
    rng = np.random.default_rng(seed)
    count = min(count, len(points))
    chosen = [int(rng.integers(len(points)))]
    dist = np.linalg.norm(points - points[chosen[0]], axis=1)
    for _ in range(count - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(points - points[nxt], axis=1))
    return np.asarray(chosen, np.int64)


def place_particles(means: np.ndarray, region: np.ndarray, counts: dict[str, int], seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``means (N,3)``, ``region (N,)`` int (index into ``REGIONS``), ``counts`` per region name ->
    ``gaussian (M,)`` indices of the Gaussians the particles sit on and ``particle_region (M,)``.

    A region with no Gaussians gets no particle; one with fewer Gaussians than its count gets one each.
    """
    unknown = set(counts) - set(REGIONS)
    if unknown:
        raise ValueError(f"unknown particle regions {sorted(unknown)}; known: {REGIONS}")
    picked, labels = [], []
    for r, name in enumerate(REGIONS):
        members = np.where(region == r)[0]
        n = int(counts.get(name, 0))
        if n <= 0 or members.size == 0:
            continue
        idx = members[farthest_points(means[members], n, seed=seed + r)]
        picked.append(idx)
        labels.append(np.full(idx.size, r, np.int32))
    if not picked:
        raise ValueError("no particle could be placed: every configured region is empty")
    return np.concatenate(picked), np.concatenate(labels)


def bind_within_regions(means: np.ndarray, region: np.ndarray, particle_rest: np.ndarray,
                        particle_region: np.ndarray, k: int, sharpness: float = 0.02
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Skinning binding restricted to the Gaussian's own region: ``index (N,k) int32``, ``weight (N,k)``.

    Softmin of distance over the ``k`` nearest particles of the same region (fewer than ``k``: the rest
    of the row repeats the nearest with weight 0). A Gaussian whose region has no particle binds to
    the nearest particles of any region.
    """
    means, particle_rest = np.asarray(means, np.float32), np.asarray(particle_rest, np.float32)
    d2 = ((means[:, None, :] - particle_rest[None, :, :]) ** 2).sum(-1)  # (N, M)
    has = np.isin(region, particle_region)
    same = (region[:, None] == particle_region[None, :]) | ~has[:, None]
    d2 = np.where(same, d2, np.inf)
    k = min(k, particle_rest.shape[0])
    index = np.argsort(d2, axis=1)[:, :k]
    dist = np.sqrt(np.take_along_axis(d2, index, axis=1))
    logits = -(dist - dist[:, :1]) / sharpness  # inf distance -> weight 0
    weight = np.exp(logits)
    weight /= weight.sum(1, keepdims=True)
    index = np.where(np.isfinite(dist), index, index[:, :1])
    return index.astype(np.int32), weight.astype(np.float32)
