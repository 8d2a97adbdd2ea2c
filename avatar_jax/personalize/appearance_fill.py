"""Colour for Gaussians the photo does not show: a harmonic (smoothest) fill over the body surface.

The seen Gaussians keep their fitted colours and act as boundary values; every unseen one takes the
colour that minimises ``sum_edges w_ij |c_i - c_j|^2`` over the surface graph
(:mod:`avatar_jax.personalize.surface_graph`): the solution of a sparse Laplace equation. It is the
lowest-frequency continuation there is (no speckle, no copied details such as logos or eyes), it only
travels along the skin (never through the body), and across part boundaries only weakly. A weak pull
``eps`` towards a fallback colour (the mean of the seen non-face Gaussians of the same part) keeps
pieces with no seen Gaussian at all (the back of a head whose hair the photo hides) well defined.

Hands the photo does not show (outside the frame, behind the back) would otherwise take the sleeve's
colour across the wrist; a hand with fewer than ``min_seen_share`` of its Gaussians seen is cut from
the arm and filled with the person's skin colour (the median of the seen face, eyes and lips
excluded), or the template's skin tone when no face is seen either.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import diags
from scipy.sparse.linalg import spsolve

from avatar_jax.body import parts
from avatar_jax.personalize.surface_graph import SurfaceGraph

# Fallback skin tone (linear RGB in [0,1]) when the photo shows no face: a mid skin tone, not grey.
DEFAULT_SKIN = (0.80, 0.62, 0.52)


def skin_colour(colors: np.ndarray, seen: np.ndarray, part: np.ndarray, face_region: np.ndarray) -> np.ndarray:
    """``(C,)`` the person's skin colour: median of the seen face region outside eyes and lips."""
    pool = seen & face_region & (part == parts.HEAD)
    if pool.sum() < 5:
        return np.asarray(DEFAULT_SKIN, np.float64)[: colors.shape[1]]
    return np.median(colors[pool], axis=0)


def part_means(colors: np.ndarray, seen: np.ndarray, part: np.ndarray, face_region: np.ndarray) -> np.ndarray:
    """Fallback colour per Gaussian ``(N,C)``: mean seen colour of its part outside the face region,
    else of its part, else of everything seen."""
    out = np.empty_like(colors)
    overall = colors[seen].mean(0) if seen.any() else colors.mean(0)
    for p in np.unique(part):
        here = part == p
        for pool in (seen & here & ~face_region, seen & here, seen):
            if pool.any():
                # The median resists a few badly fitted Gaussians (edges of the silhouette).
                out[here] = np.median(colors[pool], axis=0)
                break
        else:
            out[here] = overall
    return out


def unseen_hands(seen: np.ndarray, part: np.ndarray, min_seen_share: float = 0.05) -> np.ndarray:
    """``(N,)`` True on the Gaussians of each hand the photo (almost) does not show."""
    out = np.zeros(len(part), bool)
    for p in parts.HAND_PARTS:
        here = part == p
        if here.any() and seen[here].mean() < min_seen_share:
            out |= here
    return out


def harmonic_fill(colors: np.ndarray, seen: np.ndarray, graph: SurfaceGraph, part: np.ndarray,
                  eps: float = 1e-3, min_seen_share: float = 0.05) -> np.ndarray:
    """``colors (N,C)``, ``seen (N,)`` bool -> ``(N,C)`` with unseen rows replaced by the smooth fill."""
    colors = np.asarray(colors, np.float64)
    seen = np.asarray(seen, bool)
    part = np.asarray(part)
    n = len(colors)
    if seen.all():
        return colors.astype(np.float32)
    prior = part_means(colors, seen, part, graph.face_region)
    hidden_hand = unseen_hands(seen, part, min_seen_share)
    if hidden_hand.any():
        # Its own few seen Gaussians (a sliver at the frame's edge) are not trusted either.
        seen = seen & ~hidden_hand
        prior[hidden_hand] = skin_colour(colors, seen, part, graph.face_region)
        i, j = graph.edges.T
        keep = hidden_hand[i] == hidden_hand[j]
        graph = SurfaceGraph(graph.edges[keep], graph.weights[keep], graph.face_region)
    lap = graph.laplacian(n)
    u = np.nonzero(~seen)[0]
    s = np.nonzero(seen)[0]
    a = lap[u][:, u] + diags(np.full(len(u), eps))
    b = -(lap[u][:, s] @ colors[s]) + eps * prior[u]
    out = colors.copy()
    sol = spsolve(a.tocsc(), b)
    out[u] = sol.reshape(len(u), -1)
    return out.astype(np.float32)
