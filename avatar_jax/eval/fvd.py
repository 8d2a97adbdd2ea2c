"""FVD: the Frechet distance between Gaussians fitted to per-clip video features of two clip sets.

    clips (N, T, H, W, 3) ──► feature_fn ──► (N, D) ──► mean, covariance ──► Frechet distance (as FID)

The standard feature network is the Kinetics-400 I3D (400 logits of 16-frame clips resized to
224 x 224): :mod:`avatar_jax.eval.i3d` ports the PyTorch I3D that ``cd-fvd`` ships, loaded from a local
``i3d_pretrained_400.pt``; :func:`i3d_feature_fn` wraps it. Any other callable
``(N, T, H, W, 3) -> (N, D)`` may be passed instead. The distance is pytorch-fid's
(:func:`avatar_jax.eval.fid.frechet_distance`), which agrees with cd-fvd's SVD-based one (tested).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from avatar_jax.errors import InputError
from avatar_jax.eval.fid import frechet_distance, statistics
from avatar_jax.eval.weights import MissingWeightsError

I3D_ADVICE = (
    "FVD needs video features: give the Kinetics-400 I3D weights i3d_pretrained_400.pt (--i3d), or pass a "
    "feature_fn (clips (N, T, H, W, 3) -> (N, D)); nothing is downloaded at run time"
)


def i3d_feature_fn(weights: str | os.PathLike | None) -> Callable[[np.ndarray], np.ndarray]:
    """The I3D logits of a local ``i3d_pretrained_400.pt`` as a feature function (clips need T >= 9)."""
    from avatar_jax.eval.i3d import i3d_features, load_i3d

    model = load_i3d(weights)
    return lambda clips: i3d_features(model, clips)


def fvd(clips_a: np.ndarray, clips_b: np.ndarray, feature_fn: Callable[[np.ndarray], np.ndarray] | None) -> float:
    """FVD between two clip sets (N, T, H, W, 3) under ``feature_fn``; N >= 2 clips per set."""
    if feature_fn is None:
        raise MissingWeightsError(I3D_ADVICE)
    feats = []
    for clips in (clips_a, clips_b):
        clips = np.asarray(clips)
        if clips.ndim != 5:
            raise InputError(f"clips must be (N, T, H, W, C), got shape {clips.shape}")
        f = np.asarray(feature_fn(clips))
        if f.ndim != 2 or len(f) != len(clips):
            raise InputError(f"feature_fn must map N clips to (N, D) features, got shape {f.shape}")
        feats.append(statistics(f))
    return frechet_distance(feats[0].mu, feats[0].sigma, feats[1].mu, feats[1].sigma)
