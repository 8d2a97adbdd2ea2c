"""Input validation for the renderer: shapes at trace time, finiteness at run time.

Concrete (eager) inputs are checked with numpy and raise :class:`InputError` at once. Traced inputs
(under ``jit``/``grad``) get a host callback that raises the same error when the values arrive,
so a NaN from upstream surfaces as a one-line message instead of a garbage image or a crash deep
inside a kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.errors import InputError


def is_concrete(*trees) -> bool:
    """True when no leaf of ``trees`` is a tracer (we are running eagerly)."""
    return not any(isinstance(x, jax.core.Tracer) for t in trees for x in jax.tree_util.tree_leaves(t))


def check_shapes(means, quats, scales, opacities, colors) -> None:
    n = means.shape[0] if means.ndim == 2 else -1
    expected = {
        "means": ((n, 3), means.shape),
        "quats": ((n, 4), quats.shape),
        "scales": ((n, 3), scales.shape),
        "opacities": ((n,), opacities.shape),
    }
    if means.ndim != 2 or means.shape[1] != 3:
        raise InputError(f"render: means must have shape (N,3), got {means.shape}")
    for name, (want, got) in expected.items():
        if tuple(got) != want:
            raise InputError(f"render: {name} must have shape {want} for N={n} Gaussians, got {tuple(got)}")
    if not (colors.shape == (n, 3) or (colors.ndim == 3 and colors.shape[0] == n and colors.shape[2] == 3)):
        raise InputError(f"render: colors must be RGB (N,3) or SH (N,K,3) with N={n}, got {tuple(colors.shape)}")


def _report(names: tuple[str, ...], bad) -> None:
    bad = np.asarray(bad)
    if bad.any():
        which = ", ".join(n for n, b in zip(names, bad, strict=True) if b)
        raise InputError(f"render: non-finite values (NaN or inf) in {which}; expected finite Gaussians and camera")


def check_finite(named: dict[str, jax.Array]) -> None:
    """Raise :class:`InputError` naming every array in ``named`` that holds a NaN or inf."""
    names = tuple(named)
    if is_concrete(list(named.values())):
        _report(names, [not np.all(np.isfinite(np.asarray(a))) for a in named.values()])
        return
    flags = jnp.stack([~jnp.all(jnp.isfinite(jax.lax.stop_gradient(a))) for a in named.values()])
    jax.debug.callback(lambda b: _report(names, b), flags)


def _report_overflow(count, capacity: int) -> None:
    if int(count) > capacity:
        raise InputError(
            f"render: {int(count)} tile-Gaussian intersections exceed capacity={capacity}; "
            f"pass capacity >= {int(count)} (or capacity=None for an exact bound)"
        )


def check_capacity(count: jax.Array, capacity: int) -> None:
    """Refuse (never truncate) when the intersections do not fit the static capacity."""
    if is_concrete(count):
        _report_overflow(count, capacity)
    else:
        jax.debug.callback(lambda c: _report_overflow(c, capacity), count)
