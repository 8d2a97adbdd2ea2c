"""Render-space Gaussians (one frame) -> a standard 3DGS ``.ply`` (log-scales, opacity logits, SH colours)."""

from __future__ import annotations

import numpy as np

from avatar_jax.gaussians.ply import write_ply

SH_C0 = 0.28209479177387814


def write_gaussians_ply(path: str, means, quats, scales, opacities, colors) -> None:
    """``means (N,3)``, ``quats (N,4)``, linear ``scales (N,3)``, ``opacities (N,)`` in (0,1), ``colors``
    RGB ``(N,3)`` or SH ``(N,K,3)`` -> ``path`` in the layout 3DGS viewers read."""
    colors = np.asarray(colors, np.float32)
    sh = colors if colors.ndim == 3 else ((colors - 0.5) / SH_C0)[:, None]
    op = np.clip(np.asarray(opacities, np.float64), 1e-7, 1 - 1e-7)
    write_ply(path, np.asarray(means), np.log(np.maximum(np.asarray(scales, np.float64), 1e-30)), np.asarray(quats),
              np.log(op / (1 - op)), sh)
