"""Our own avatar file (``avatar.npz``): the Gaussian cloud with its template bindings and body fit.

It holds every :class:`GaussianCloud` field (float32 / int32, lossless) plus optional extras such as
the fitted phenotype and pose. The ``.ply`` next to it is for 3DGS viewers; this file is what
avatar-jax reloads to animate the avatar.
"""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import numpy as np

from avatar_jax.errors import InputError
from avatar_jax.gaussians.cloud import GaussianCloud

FORMAT_VERSION = 1


def save_avatar(path: str, cloud: GaussianCloud, **extras: np.ndarray) -> None:
    """Write ``cloud`` and ``extras`` (arrays, e.g. ``phenotype (6,)``) to ``path`` (.npz)."""
    fields = {f.name: np.asarray(getattr(cloud, f.name)) for f in dataclasses.fields(GaussianCloud)}
    clash = set(fields) & set(extras)
    if clash:
        raise ValueError(f"extras may not reuse cloud field names: {sorted(clash)}")
    np.savez(path, format_version=np.int32(FORMAT_VERSION), **fields,
             **{f"extra_{k}": np.asarray(v) for k, v in extras.items()})


def load_avatar(path: str) -> tuple[GaussianCloud, dict[str, np.ndarray]]:
    """Read a file written by :func:`save_avatar` -> ``(cloud, extras)``."""
    if not os.path.exists(path):
        raise InputError(f"no such avatar file: {path}")
    try:
        z = np.load(path)
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not an avatar file: {e}") from None
    with z:
        if "format_version" not in z.files:
            raise InputError(f"{path} is not an avatar file (no format_version)")
        names = [f.name for f in dataclasses.fields(GaussianCloud)]
        missing = [k for k in names if k not in z.files]
        if missing:
            raise InputError(f"{path} lacks {missing}")
        cloud = GaussianCloud(**{k: jnp.asarray(z[k]) for k in names})
        extras = {k[len("extra_"):]: z[k] for k in z.files if k.startswith("extra_")}
    return cloud, extras
