"""Tight tile footprints: which 16x16 tiles a projected Gaussian can reach with ``alpha >= 1/255``.

DESIGN.md lets a Gaussian touch every tile that overlaps its 3-sigma box ``[m - r, m + r]``. Most of
those (Gaussian, pixel) pairs never pass the ``alpha >= 1/255`` test, so the binning also drops, inside
that box, every tile in which no pixel centre can reach it. With the conic ``A = Sigma2D^-1`` and
``q(d) = d^T A d``, ``alpha = min(0.99, o exp(-q/2)) >= 1/255`` needs ``q <= Q = 2 ln(255 o)``:

* per-axis extent: the ellipse ``q <= Q`` spans ``+- sqrt(Q Sigma_xx)`` in x and ``+- sqrt(Q Sigma_yy)``
  in y (``Sigma = A^-1``), which narrows the box per axis and with the opacity;
* exact test: a tile is kept iff the minimum of ``q`` over the rectangle of its pixel centres
  ``[16t + 0.5, 16t + 15.5]^2`` is ``<= Q`` (a convex quadratic on a box: 0 inside, else the best of
  its four edges, each a 1-D quadratic minimised in closed form and clamped).

Only tiles whose every pixel fails the alpha test are dropped, so images are unchanged; ``Q`` gets a
small margin so that float32 rounding in the kernels cannot make a dropped pixel pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from avatar_jax.kernels.splat_common import ALPHA_MIN

TILE = 16
# Q is widened by this relative amount plus Q_SLACK: q and o*exp(-q/2) in float32 are accurate to
# ~1e-6 relative, far inside this margin.
Q_MARGIN = 1e-3
Q_SLACK = 1e-2


def cutoff(opacities: jax.Array) -> jax.Array:
    """``(M,)`` -> ``Q (M,)``: the largest ``q`` at which ``o exp(-q/2)`` still reaches 1/255 (margin added).

    Negative where even the centre stays below 1/255 (the Gaussian reaches no pixel).
    """
    o = jnp.maximum(opacities, 1e-30)
    q = 2.0 * jnp.log(o / ALPHA_MIN)
    return jnp.where(o >= ALPHA_MIN, q * (1.0 + Q_MARGIN) + Q_SLACK, -1.0)


def extents(conics: jax.Array, q_max: jax.Array) -> jax.Array:
    """``conics (M,3)`` (a, b, c of ``Sigma2D^-1``), ``q_max (M,)`` -> ellipse half-widths ``(M,2)`` in x, y."""
    a, b, c = conics[:, 0], conics[:, 1], conics[:, 2]
    det = jnp.maximum(a * c - b * b, 1e-30)
    q = jnp.maximum(q_max, 0.0)
    return jnp.stack([jnp.sqrt(q * c / det), jnp.sqrt(q * a / det)], axis=-1)


def _edge_min(a, b, c, d_fixed, lo, hi):
    """Minimum over ``t in [lo, hi]`` of ``a d^2 + 2 b d t + c t^2`` at ``d = d_fixed``."""
    t = jnp.clip(-b * d_fixed / jnp.where(c > 0, c, 1.0), lo, hi)
    return a * d_fixed * d_fixed + 2.0 * b * d_fixed * t + c * t * t


def min_q_over_tile(means2d: jax.Array, conics: jax.Array, tx: jax.Array, ty: jax.Array, size: int = TILE
                    ) -> jax.Array:
    """Smallest ``q`` over the pixel centres of the ``size``-pixel bin ``(tx, ty)``; arrays ``(E,...)`` aligned."""
    a, b, c = conics[..., 0], conics[..., 1], conics[..., 2]
    x0 = tx * size + 0.5 - means2d[..., 0]  # rectangle relative to the mean
    x1 = x0 + (size - 1)
    y0 = ty * size + 0.5 - means2d[..., 1]
    y1 = y0 + (size - 1)
    inside = (x0 <= 0) & (x1 >= 0) & (y0 <= 0) & (y1 >= 0)
    best = jnp.minimum(
        jnp.minimum(_edge_min(a, b, c, x0, y0, y1), _edge_min(a, b, c, x1, y0, y1)),
        jnp.minimum(_edge_min(c, b, a, y0, x0, x1), _edge_min(c, b, a, y1, x0, x1)),
    )
    return jnp.where(inside, 0.0, best)
