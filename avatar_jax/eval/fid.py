"""FID: the Frechet distance between Gaussians fitted to Inception pool3 features of two image sets,
as pytorch-fid computes it.

    images (N, H, W, 3) in [0, 1] ──► InceptionV3FID ──► (N, 2048) ──► mean (2048,), covariance (2048, 2048)
    d² = |mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2))

``frechet_distance`` is pytorch-fid's ``calculate_frechet_distance`` (scipy ``sqrtm``; when the product
is singular, ``eps`` on both diagonals; a complex square root is accepted only with a negligible
imaginary diagonal). It takes any feature statistics, so FVD (:mod:`avatar_jax.eval.fvd`) uses it too.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import scipy.linalg
from flax import nnx

from avatar_jax.errors import InputError
from avatar_jax.eval.inception import InceptionV3FID, load_inception, resize_bilinear


class Statistics(NamedTuple):
    mu: np.ndarray  # (D,)
    sigma: np.ndarray  # (D, D)


def statistics(features: np.ndarray) -> Statistics:
    """(N, D) features -> mean and unbiased covariance (``np.cov(rowvar=False)``), float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise InputError(f"need (N >= 2, D) features for a covariance, got shape {features.shape}")
    return Statistics(features.mean(0), np.cov(features, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """d² between N(mu1, sigma1) and N(mu2, sigma2), pytorch-fid's formula and fallbacks."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise InputError(f"statistics of different sizes: {mu1.shape} / {mu2.shape}, {sigma1.shape} / {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise InputError(f"Frechet distance: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


_forward = nnx.jit(lambda m, x: m(x, resize=False))


def inception_features(model: InceptionV3FID, images: np.ndarray, batch: int = 8) -> np.ndarray:
    """(N, H, W, 3) images (uint8 0..255, or float in [0, 1]) -> (N, D) pool3 features.

    Images are resized to 299 x 299 first; the network then runs on fixed (batch, 299, 299, 3) chunks
    (the last one padded), so one compilation serves every input size and count.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"images must be (N, H, W, 3), got shape {images.shape}")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    out = []
    for start in range(0, len(images), batch):
        chunk = resize_bilinear(jnp.asarray(images[start : start + batch], jnp.float32))
        n = chunk.shape[0]
        if n < batch:
            chunk = jnp.concatenate([chunk, jnp.repeat(chunk[-1:], batch - n, 0)])
        out.append(np.asarray(_forward(model, chunk))[:n])
    return np.concatenate(out)


def fid(
    images_a: np.ndarray,
    images_b: np.ndarray,
    *,
    weights: str | os.PathLike | None = None,
    model: InceptionV3FID | None = None,
) -> float:
    """FID between two image sets (N, H, W, 3); ``weights`` is the local pytorch-fid Inception file."""
    model = model or load_inception(weights)
    a = statistics(inception_features(model, images_a))
    b = statistics(inception_features(model, images_b))
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
