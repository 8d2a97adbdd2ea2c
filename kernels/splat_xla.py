"""jnp reference of the tile compositing kernels, and the XLA rasterisation path.

Instead of walking each tile's Gaussians one by one (what the Pallas kernels do), this version
works on whole chunks at once, which is what XLA on a CPU is good at:

1. per chunk, the product of ``(1 - alpha)`` over its Gaussians (ignoring early termination);
2. a segmented exclusive cumulative product over the chunks of a tile gives every chunk the
   transmittance ``T0`` in front of it;
3. per chunk, ``T`` in front of each Gaussian is ``T0`` times an in-chunk exclusive cumprod.

Early termination needs no sequential state: ``T`` before termination is monotone, so "the pixel
stops before the Gaussian that would bring T below 1e-4" is exactly "keep Gaussian i iff the
untruncated product up to and including i is >= 1e-4".

The backward pass is chunk-parallel too: with ``S_i`` the colour composited up to and including
Gaussian ``i`` and ``C`` the final colour, ``dC/dalpha_i = T_i c_i - (C - S_i) / (1 - alpha_i)``.
Memory is ``O(chunks x 256)`` per pass plus one batch of ``(chunk, 256)`` blocks: it grows with the
number of tile intersections, never with Gaussians x pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from avatar_jax.kernels.splat_common import (
    ALPHA_MAX,
    ALPHA_MIN,
    CA,
    CB,
    CC,
    CR,
    DZ,
    MX,
    MY,
    NUM_FEATURES,
    OP,
    T_MIN,
)


def _alpha(f: jax.Array, u: jax.Array, v: jax.Array):
    """``f (C,F)``, pixel centres ``u, v (P,)`` -> ``alpha (C,P)`` (0 where skipped), gauss, dx, dy."""
    dx = u[None, :] - f[:, MX, None]
    dy = v[None, :] - f[:, MY, None]
    sigma = -0.5 * (f[:, CA, None] * dx * dx + f[:, CC, None] * dy * dy) - f[:, CB, None] * dx * dy
    gauss = jnp.exp(sigma)
    raw = f[:, OP, None] * gauss
    alpha = jnp.minimum(ALPHA_MAX, raw)
    alpha = jnp.where(alpha >= ALPHA_MIN, alpha, 0.0)
    return alpha, raw, gauss, dx, dy


def _scan0(x: jax.Array, op) -> jax.Array:
    """Inclusive scan along the (short, static) chunk axis 0, unrolled.

    XLA:CPU lowers ``cumprod``/``cumsum`` to a reduce-window that is ~8x slower than this unrolled
    chain at chunk sizes of 16-64, and these scans dominate the XLA path.
    """
    out = [x[0]]
    for i in range(1, x.shape[0]):
        out.append(op(out[-1], x[i]))
    return jnp.stack(out, axis=0)


def _exclusive_cumprod(x: jax.Array) -> jax.Array:
    """Exclusive cumulative product along axis 0."""
    return jnp.concatenate([jnp.ones_like(x[:1]), _scan0(x[:-1], jnp.multiply)], axis=0)


def _segmented_exclusive(values: jax.Array, first: jax.Array, op, identity: float) -> jax.Array:
    """Exclusive scan of ``values (K,...)`` along axis 0 that restarts where ``first (K,)`` is True."""
    flags = first.reshape(first.shape + (1,) * (values.ndim - 1))

    def combine(a, b):
        fa, va = a
        fb, vb = b
        return fa | fb, jnp.where(fb, vb, op(va, vb))

    _, incl = jax.lax.associative_scan(combine, (jnp.broadcast_to(flags, values.shape), values))
    shifted = jnp.concatenate([jnp.full_like(values[:1], identity), incl[:-1]], axis=0)
    return jnp.where(flags, identity, shifted)


def _chunk_alive(f, u, v, t0):
    alpha, raw, gauss, dx, dy = _alpha(f, u, v)
    t_incl = t0[None] * _scan0(1.0 - alpha, jnp.multiply)
    alive = t_incl >= T_MIN
    a = jnp.where(alive, alpha, 0.0)
    t_excl = t0[None] * _exclusive_cumprod(1.0 - a)
    return a, raw, gauss, dx, dy, t_excl


def forward(feats, chunk_tile, chunk_first, u, v, num_tiles: int, batch: int):
    """Composite all tiles.

    Args:
      feats: ``(Kc, C, F)`` chunk features, front to back within each tile.
      chunk_tile: ``(Kc,)`` tile of each chunk; chunks of one tile are consecutive.
      chunk_first: ``(Kc,)`` bool, True on the first chunk of each tile (and on unused chunks).
      u, v: ``(Kc, P)`` pixel centres of each chunk's tile.
      batch: chunks processed together (bounds the ``(batch, C, P)`` temporaries).

    Returns ``colour (T,P,3)``, ``depth (T,P)``, ``trans (T,P)`` (final transmittance) and the
    residuals ``t0 (Kc,P)`` and ``prefix (Kc,P,4)`` (colour+depth composited before each chunk).
    """
    assert feats.shape[-1] == NUM_FEATURES
    prod_all = jax.lax.map(lambda x: jnp.prod(1.0 - _alpha(x[0], x[1], x[2])[0], axis=0),
                           (feats, u, v), batch_size=batch)
    t0 = _segmented_exclusive(prod_all, chunk_first, jnp.multiply, 1.0)

    def pass2(x):
        f, uu, vv, tt = x
        a, _, _, _, _, t_excl = _chunk_alive(f, uu, vv, tt)
        w = a * t_excl
        cd = jnp.einsum("cp,cf->pf", w, f[:, CR:DZ + 1])
        return cd, jnp.prod(1.0 - a, axis=0)

    cd, keep = jax.lax.map(pass2, (feats, u, v, t0), batch_size=batch)
    prefix = _segmented_exclusive(cd, chunk_first, jnp.add, 0.0)
    tile_cd = jax.ops.segment_sum(cd, chunk_tile, num_segments=num_tiles, indices_are_sorted=True)
    trans = jax.ops.segment_prod(keep, chunk_tile, num_segments=num_tiles, indices_are_sorted=True)
    return tile_cd[..., :3], tile_cd[..., 3], trans, t0, prefix


def backward(feats, chunk_tile, u, v, t0, prefix, colour, depth, trans, g_colour, g_depth, g_trans, batch: int):
    """Per-slot gradients ``(Kc, C, F)`` of a loss given its gradients w.r.t. the tile outputs.

    ``colour (T,P,3)``, ``depth (T,P)``, ``trans (T,P)`` are the forward outputs and
    ``g_colour``, ``g_depth``, ``g_trans`` their cotangents; ``t0``/``prefix`` the forward residuals.
    """
    final = jnp.concatenate([colour, depth[..., None]], axis=-1)[chunk_tile]  # (Kc,P,4)
    g_cd = jnp.concatenate([g_colour, g_depth[..., None]], axis=-1)[chunk_tile]
    g_t = (g_trans * trans)[chunk_tile]  # d/dalpha_i of T_final is -T_final / (1 - alpha_i)

    def chunk_grad(x):
        f, uu, vv, tt, pre, fin, gcd, gt = x
        a, raw, gauss, dx, dy, t_excl = _chunk_alive(f, uu, vv, tt)
        w = a * t_excl
        cd_f = f[:, CR:DZ + 1]  # (C,4)
        incl = pre[None] + _scan0(w[..., None] * cd_f[:, None, :], jnp.add)  # (C,P,4)
        inv = 1.0 / (1.0 - a)
        behind = (fin[None] - incl) * inv[..., None]
        d_a = jnp.sum(gcd[None] * (t_excl[..., None] * cd_f[:, None, :] - behind), axis=-1) - gt[None] * inv
        d_a = jnp.where(a > 0, d_a, 0.0)
        g_cd_f = jnp.einsum("cp,pf->cf", w, gcd)  # (C,4)
        d_raw = jnp.where(raw < ALPHA_MAX, d_a, 0.0)  # the 0.99 clamp has zero slope
        d_op = jnp.sum(d_raw * gauss, axis=1)
        d_sig = d_raw * a  # alpha = o exp(sigma), unclamped
        d_mx = jnp.sum(d_sig * (f[:, CA, None] * dx + f[:, CB, None] * dy), axis=1)
        d_my = jnp.sum(d_sig * (f[:, CB, None] * dx + f[:, CC, None] * dy), axis=1)
        d_ca = jnp.sum(d_sig * (-0.5 * dx * dx), axis=1)
        d_cb = jnp.sum(d_sig * (-dx * dy), axis=1)
        d_cc = jnp.sum(d_sig * (-0.5 * dy * dy), axis=1)
        return jnp.concatenate([jnp.stack([d_mx, d_my, d_ca, d_cb, d_cc, d_op], axis=-1), g_cd_f], axis=-1)

    return jax.lax.map(chunk_grad, (feats, u, v, t0, prefix, final, g_cd, g_t), batch_size=batch)
