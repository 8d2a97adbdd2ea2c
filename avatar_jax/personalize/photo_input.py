"""Read a photo into RGB uint8, whatever its layout: grayscale, grayscale + alpha, RGB, RGBA, 16-bit, float.

Transparent pixels are composited over white (a cut-out person on a plain background, which the
person detector handles like a studio photo); anything that is not an image is one clear error line.
"""

from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np

from avatar_jax.errors import InputError
from avatar_jax.personalize.detect import MIN_SIDE


def to_rgb8(img: np.ndarray, name: str = "image") -> np.ndarray:
    """``(H,W)``, ``(H,W,1|2|3|4)`` of any numeric dtype -> ``(H,W,3)`` uint8."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"{name}: expected a grayscale, RGB or RGBA image, got an array of shape {img.shape}")
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    if img.dtype.kind in "ui":
        x = img.astype(np.float64) / float(np.iinfo(img.dtype).max)
    elif img.dtype.kind == "f":
        x = np.nan_to_num(img.astype(np.float64))
    else:
        raise InputError(f"{name}: unsupported pixel type {img.dtype}")
    x = np.clip(x, 0.0, 1.0)
    color = x[..., :3] if x.shape[-1] >= 3 else np.repeat(x[..., :1], 3, axis=-1)
    if x.shape[-1] in (2, 4):
        a = x[..., -1:]
        color = color * a + (1.0 - a)  # over white
    return np.ascontiguousarray(np.round(color * 255).astype(np.uint8))


def load_image(path: str) -> np.ndarray:
    """RGB uint8 ``(H,W,3)``; a clear :class:`InputError` for anything else."""
    if not os.path.isfile(path):
        raise InputError(f"no such image file: {path}")
    try:
        img = iio.imread(path)
    except Exception as e:  # imageio raises many types for non-images
        raise InputError(f"{path} is not a readable image ({type(e).__name__})") from None
    img = np.asarray(img)
    if img.ndim == 4:  # animated formats: the first frame
        img = img[0]
    rgb = to_rgb8(img, path)
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise InputError(f"{path} is too small ({rgb.shape[1]}x{rgb.shape[0]}); need at least {MIN_SIDE} "
                         "pixels on each side")
    return rgb
