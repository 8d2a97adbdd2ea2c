"""jnp reference of the tile compositing kernels, and the XLA rasterisation path.

Instead of walking each tile's Gaussians one by one (what the Pallas kernels do), this version
works on whole chunks at once, which is what XLA on a CPU is good at. One ``lax.scan`` walks the
chunk list in order, ``batch`` chunks per step; a step

1. evaluates alpha for every (Gaussian, pixel) pair of its chunks (the only pass over the pairs);
2. gives every chunk the transmittance ``T0`` in front of it: a segmented exclusive cumulative
   product of the chunks' ``prod(1 - alpha)`` within the step, continued from the carry (the
   transmittance at the end of the previous step's last chunk, when its tile goes on);
3. composites each chunk: ``T`` in front of each Gaussian is ``T0`` times an in-chunk exclusive
   cumprod.

Early termination needs no sequential state: ``T`` before termination is monotone, so "the pixel
stops before the Gaussian that would bring T below 1e-4" is exactly "keep Gaussian i iff the
untruncated product up to and including i is >= 1e-4". Steps past the chunks in use are skipped.

The backward pass is the same scan. With ``g`` the loss gradient of a pixel's (colour, depth),
``s_i = g . (c_i, z_i)`` and ``Ss_i = sum_{j<=i} w_j s_j`` (``w = alpha T``), the gradient is
``dL/dalpha_i = T_i s_i - (Ss_final - Ss_i) / (1 - alpha_i) - gT T_final / (1 - alpha_i)``: the
colour channels are contracted with ``g`` first, so every per-pair quantity is a scalar, and the
only residual kept from the forward is ``T0`` per chunk and pixel. Memory is ``O(chunks x 256)``:
it grows with the number of tile intersections, never with Gaussians x pixels.
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
    tile_pixel_centres,
)


def _alpha(f: jax.Array, u: jax.Array, v: jax.Array):
    """``f (..., C, F)``, pixel centres ``u, v (..., P)`` -> ``alpha (..., C, P)`` (0 where skipped), raw, G, dx, dy."""
    dx = u[..., None, :] - f[..., MX, None]
    dy = v[..., None, :] - f[..., MY, None]
    sigma = -0.5 * (f[..., CA, None] * dx * dx + f[..., CC, None] * dy * dy) - f[..., CB, None] * dx * dy
    gauss = jnp.exp(sigma)
    raw = f[..., OP, None] * gauss
    alpha = jnp.minimum(ALPHA_MAX, raw)
    alpha = jnp.where(alpha >= ALPHA_MIN, alpha, 0.0)
    return alpha, raw, gauss, dx, dy


def _scan_chunk(x: jax.Array, op) -> jax.Array:
    """Inclusive scan along the (short, static) chunk axis ``-2`` of ``(..., C, P)``, unrolled.

    XLA:CPU lowers ``cumprod``/``cumsum`` to a reduce-window that is ~8x slower than this unrolled
    chain at chunk sizes of 16-64, and these scans dominate the XLA path.
    """
    out = [x[..., 0, :]]
    for i in range(1, x.shape[-2]):
        out.append(op(out[-1], x[..., i, :]))
    return jnp.stack(out, axis=-2)


def _segmented_exclusive(values, first, carry, op, identity: float):
    """Exclusive scan of ``values (K,P)`` along axis 0, restarting where ``first (K,)`` is True.

    The leading run (before the first restart) continues from ``carry (P,)``. Returns the scan and
    the inclusive value at the end (the next step's carry).
    """
    flags = jnp.broadcast_to(first[:, None], values.shape)

    def combine(a, b):
        fa, va = a
        fb, vb = b
        return fa | fb, jnp.where(fb, vb, op(va, vb))

    _, incl = jax.lax.associative_scan(combine, (flags, values))
    lead = jnp.cumsum(first.astype(jnp.int32)) == 0  # chunks that continue the carried tile
    incl = jnp.where(lead[:, None], op(carry[None], incl), incl)
    shifted = jnp.concatenate([carry[None], incl[:-1]], axis=0)
    return jnp.where(first[:, None], identity, shifted), incl[-1]


def _alive(alpha, t0):
    """Apply early termination: ``alpha``/``T`` in front of each Gaussian, ``(B,C,P)`` each.

    One cumprod serves both: a Gaussian is alive only if all before it are, so in front of an alive
    Gaussian the truncated and untruncated products agree (and dead ones get weight 0 anyway).
    """
    t_incl = t0[:, None] * _scan_chunk(1.0 - alpha, jnp.multiply)
    a = jnp.where(t_incl >= T_MIN, alpha, 0.0)
    t_excl = jnp.concatenate([t0[:, None], t_incl[:, :-1]], axis=1)
    return a, t_excl


def _batched(x: jax.Array, batch: int, fill) -> jax.Array:
    """``(K, ...)`` -> ``(ceil(K/batch), batch, ...)``, padded with ``fill``."""
    pad = -x.shape[0] % batch
    x = jnp.concatenate([x, jnp.full((pad,) + x.shape[1:], fill, x.dtype)]) if pad else x
    return x.reshape((-1, batch) + x.shape[1:])


def _scan_batches(step, carry, xs, n_chunks, batch: int, skip_out):
    """``lax.scan`` of ``step`` over batches of chunks; batches past ``n_chunks`` output ``skip_out``."""
    nb = xs[0].shape[0]

    def body(c, x):
        b, *rest = x
        return jax.lax.cond(b * batch < n_chunks, step, lambda c, _: (c, skip_out), c, tuple(rest))

    return jax.lax.scan(body, carry, (jnp.arange(nb),) + tuple(xs))


def _composite_batch(t_run, f, tile, first, tiles_x: int, tiles_per_camera: int, tile_size: int):
    """One scan step's compositing weights: alive ``a`` and ``T`` in front ``(B,C,P)``, ``T0 (B,P)``, new carry."""
    u, v = tile_pixel_centres(tile, tiles_x, tiles_per_camera, tile_size)
    alpha = _alpha(f, u.astype(f.dtype), v.astype(f.dtype))[0]
    t0, t_run = _segmented_exclusive(jnp.prod(1.0 - alpha, axis=1), first, t_run, jnp.multiply, 1.0)
    a, t_excl = _alive(alpha, t0)
    return t_run, a, t_excl, t0


def composited_pairs(feats, chunk_tile, chunk_first, n_chunks, *, tiles_x: int, tiles_per_camera: int, batch: int,
                     tile_size: int) -> jax.Array:
    """Number of (Gaussian, pixel) pairs that are really composited (alpha >= 1/255, not terminated), ``()``.

    Same arguments as :func:`forward`; for benchmarks (what share of the evaluated pairs does work).
    """
    def step(t_run, x):
        f, tile, first = x
        t_run, a, _, _ = _composite_batch(t_run, f, tile, first, tiles_x, tiles_per_camera, tile_size)
        return t_run, jnp.sum(a > 0, dtype=jnp.int32)

    xs = (_batched(feats, batch, 0.0), _batched(chunk_tile, batch, 0), _batched(chunk_first, batch, True))
    init = jnp.ones((tile_size * tile_size,), feats.dtype)
    return jnp.sum(_scan_batches(step, init, xs, n_chunks, batch, jnp.zeros((), jnp.int32))[1])


def forward(feats, chunk_tile, chunk_first, n_chunks, *, tiles_x: int, tiles_per_camera: int, num_tiles: int,
            batch: int, tile_size: int):
    """Composite all tiles.

    Args:
      feats: ``(Kc, C, F)`` chunk features, front to back within each tile.
      chunk_tile: ``(Kc,)`` tile of each chunk; chunks of one tile are consecutive.
      chunk_first: ``(Kc,)`` bool, True on the first chunk of each tile (and on unused chunks).
      n_chunks: ``()`` chunks in use (a prefix); the rest are skipped.
      batch: chunks per scan step (bounds the ``(batch, C, P)`` temporaries).
      tile_size: pixels per tile side (``P = tile_size^2``).

    Returns ``colour (T,P,3)``, ``depth (T,P)``, ``trans (T,P)`` (final transmittance) and the
    residual ``t0 (Kc,P)`` (transmittance in front of each chunk).
    """
    assert feats.shape[-1] == NUM_FEATURES
    kc, _, _ = feats.shape
    dtype = feats.dtype

    def step(t_run, x):
        f, tile, first = x
        t_run, a, t_excl, t0 = _composite_batch(t_run, f, tile, first, tiles_x, tiles_per_camera, tile_size)
        cd = jnp.einsum("bcp,bcf->bpf", a * t_excl, f[..., CR:DZ + 1])
        return t_run, (cd, jnp.prod(1.0 - a, axis=1), t0)

    xs = (_batched(feats, batch, 0.0), _batched(chunk_tile, batch, 0), _batched(chunk_first, batch, True))
    pixels = tile_size * tile_size
    skip = (jnp.zeros((batch, pixels, 4), dtype), jnp.ones((batch, pixels), dtype), jnp.ones((batch, pixels), dtype))
    _, (cd, keep, t0) = _scan_batches(step, jnp.ones((pixels,), dtype), xs, n_chunks, batch, skip)
    cd, keep, t0 = (x.reshape((-1,) + x.shape[2:])[:kc] for x in (cd, keep, t0))
    tile_cd = jax.ops.segment_sum(cd, chunk_tile, num_segments=num_tiles, indices_are_sorted=True)
    trans = jax.ops.segment_prod(keep, chunk_tile, num_segments=num_tiles, indices_are_sorted=True)
    return tile_cd[..., :3], tile_cd[..., 3], trans, t0


def backward(feats, chunk_tile, chunk_first, n_chunks, t0, colour, depth, trans, g_colour, g_depth, g_trans, *,
             tiles_x: int, tiles_per_camera: int, batch: int, tile_size: int):
    """Per-slot gradients ``(Kc, C, F)`` of a loss given its gradients w.r.t. the tile outputs.

    ``colour (T,P,3)``, ``depth (T,P)``, ``trans (T,P)`` are the forward outputs and
    ``g_colour``, ``g_depth``, ``g_trans`` their cotangents; ``t0`` the forward residual.
    """
    kc, chunk, _ = feats.shape
    dtype = feats.dtype
    s_final = jnp.sum(g_colour * colour, axis=-1) + g_depth * depth  # (T,P): g . (colour, depth)
    g_t = g_trans * trans  # d/dalpha_i of T_final is -T_final / (1 - alpha_i)

    def step(pre_run, x):
        f, tile, first, tt = x
        u, v = tile_pixel_centres(tile, tiles_x, tiles_per_camera, tile_size)
        gc, gd, fin, gt = g_colour[tile], g_depth[tile], s_final[tile], g_t[tile]  # per-batch gathers, not stored
        alpha, raw, gauss, dx, dy = _alpha(f, u.astype(dtype), v.astype(dtype))
        a, t_excl = _alive(alpha, tt)
        w = a * t_excl
        s = jnp.einsum("bcf,bpf->bcp", f[..., CR:DZ], gc) + f[..., DZ, None] * gd[:, None]  # channels first
        ws = w * s
        pre, pre_run = _segmented_exclusive(jnp.sum(ws, axis=1), first, pre_run, jnp.add, 0.0)
        incl = pre[:, None] + _scan_chunk(ws, jnp.add)
        inv = 1.0 / (1.0 - a)
        d_a = t_excl * s - (fin[:, None] - incl + gt[:, None]) * inv
        d_raw = jnp.where((a > 0) & (raw < ALPHA_MAX), d_a, 0.0)  # the 0.99 clamp has zero slope
        d_sig = d_raw * a  # alpha = o exp(sigma), unclamped
        # Per-pair moments first; the conic coefficients are per Gaussian and multiply after the sums.
        s_x, s_y = jnp.sum(d_sig * dx, axis=-1), jnp.sum(d_sig * dy, axis=-1)
        s_xx, s_xy, s_yy = (jnp.sum(d_sig * p, axis=-1) for p in (dx * dx, dx * dy, dy * dy))
        grads = [
            f[..., CA] * s_x + f[..., CB] * s_y,
            f[..., CB] * s_x + f[..., CC] * s_y,
            -0.5 * s_xx,
            -s_xy,
            -0.5 * s_yy,
            jnp.sum(d_raw * gauss, axis=-1),
        ]
        g_c = jnp.einsum("bcp,bpf->bcf", w, gc)
        g_z = jnp.sum(w * gd[:, None], axis=-1)
        return pre_run, jnp.concatenate([jnp.stack(grads, axis=-1), g_c, g_z[..., None]], axis=-1)

    xs = (_batched(feats, batch, 0.0), _batched(chunk_tile, batch, 0), _batched(chunk_first, batch, True),
          _batched(t0, batch, 1.0))
    skip = jnp.zeros((batch, chunk, NUM_FEATURES), dtype)
    _, grads = _scan_batches(step, jnp.zeros((tile_size * tile_size,), dtype), xs, n_chunks, batch, skip)
    return grads.reshape((-1, chunk, NUM_FEATURES))[:kc]
