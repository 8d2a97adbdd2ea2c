"""Input validation for the renderer: shapes at trace time, finiteness for eager calls.

Concrete (eager) inputs are checked with numpy and raise :class:`InputError` at once. Traced inputs
(under ``jit``/``grad``) are not checked for finiteness: a check there would need a host callback,
which cannot be exported, costs a host round trip in every sharded step, and surfaces as a runtime
error rather than an ``InputError``. Inside a jitted step, check the loss instead (a NaN input
gives a NaN image).
"""

from __future__ import annotations

import jax
import numpy as np

from avatar_jax.errors import InputError


def is_concrete(*trees) -> bool:
    """True when no leaf of ``trees`` is a tracer (we are running eagerly)."""
    return not any(isinstance(x, jax.core.Tracer) for t in trees for x in jax.tree_util.tree_leaves(t))


def check_shapes(means, quats, scales, opacities, colors, cameras: int | None = None) -> None:
    """Gaussians ``(N,...)`` shared by the cameras, or ``(B,N,...)`` with one set per camera of a batch.

    ``cameras``: ``B`` of a camera batch, ``None`` for a single camera.
    """
    if means.ndim not in (2, 3) or means.shape[-1] != 3:
        raise InputError(f"render: means must have shape (N,3) or (B,N,3), got {tuple(means.shape)}")
    lead = tuple(means.shape[:-2])
    if lead and lead != (cameras,):
        where = "a single camera" if cameras is None else f"a batch of {cameras} cameras"
        raise InputError(f"render: per-camera Gaussians {tuple(means.shape)} need one set per camera, got {where}")
    n = means.shape[-2]
    expected = {"quats": (lead + (n, 4), quats.shape), "scales": (lead + (n, 3), scales.shape),
                "opacities": (lead + (n,), opacities.shape)}
    for name, (want, got) in expected.items():
        if tuple(got) != want:
            raise InputError(f"render: {name} must have shape {want} for N={n} Gaussians, got {tuple(got)}")
    rgb = colors.shape == lead + (n, 3)
    sh = colors.ndim == len(lead) + 3 and colors.shape[: len(lead) + 1] == lead + (n,) and colors.shape[-1] == 3
    if not (rgb or sh):
        raise InputError(f"render: colors must be RGB {lead + (n, 3)} or SH {lead + (n, 'K', 3)}, "
                         f"got {tuple(colors.shape)}")


def check_finite(named: dict[str, jax.Array]) -> None:
    """Eager inputs: raise :class:`InputError` naming every array in ``named`` with a NaN or inf.

    Traced inputs are left alone (see the module docstring).
    """
    if not is_concrete(list(named.values())):
        return
    bad = [name for name, a in named.items() if not np.all(np.isfinite(np.asarray(a)))]
    if bad:
        raise InputError(f"render: non-finite values (NaN or inf) in {', '.join(bad)}; "
                         "expected finite Gaussians and camera")
