"""FVD: the Frechet distance between Gaussians fitted to per-clip video features of two clip sets.

    clips (N, T, H, W, 3) ──► feature_fn ──► (N, D) ──► statistics ──► Frechet distance (as FID)

The standard feature network is the Kinetics-400 I3D of the FVD paper (TF-Hub ``i3d-kinetics-400``,
400 logits of 16-frame 224x224 clips). No PyTorch reference of that network installs from the package
registry here and no weights can be fetched, so this module takes the feature function as an argument:
any callable ``(N, T, H, W, 3) -> (N, D)``. A run that asks for the standard I3D without providing it
gets :class:`MissingWeightsError` naming what is needed. The Frechet distance is pytorch-fid's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from avatar_jax.errors import InputError
from avatar_jax.eval.fid import frechet_distance, statistics
from avatar_jax.eval.weights import MissingWeightsError

I3D_ADVICE = (
    "FVD needs a video feature function: pass feature_fn (clips (N, T, H, W, 3) -> (N, D)); the standard "
    "Kinetics-400 I3D (i3d-kinetics-400) is not bundled and cannot be downloaded here"
)


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
