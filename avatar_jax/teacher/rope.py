"""3-D rotary position embedding of the Wan DiT (diffusers ``WanRotaryPosEmbed``).

The head dimension splits into a time part and two equal spatial parts: ``h = w = 2·(head_dim // 6)``,
``t = head_dim - h - w``. Each part rotates consecutive channel pairs ``(2i, 2i+1)`` by
``pos · theta^(-2i/part)``, with the token's frame, row or column index as ``pos``. Angles are computed in
float64 (numpy, at trace time: the grid is static) and stored as float32, as upstream does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.errors import ConfigError


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """``(t, h, w)`` channel split of one head; every part must be even."""
    h = w = 2 * (head_dim // 6)
    t = head_dim - h - w
    if min(t, h, w) <= 0 or t % 2:
        raise ConfigError(f"attention head_dim {head_dim} does not split into even time/height/width rotary parts")
    return t, h, w


@functools.lru_cache(maxsize=64)
def _table_np(grid: tuple[int, int, int], head_dim: int, max_seq_len: int, theta: float):
    if max(grid) > max_seq_len:
        raise ConfigError(f"token grid {grid} exceeds the rotary table length rope_max_seq_len={max_seq_len}")
    cos_parts, sin_parts = [], []
    for axis, dim in enumerate(axis_dims(head_dim)):
        freqs = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
        angles = np.outer(np.arange(grid[axis], dtype=np.float64), freqs)  # (n, dim/2)
        shape = [1, 1, 1, dim]
        shape[axis] = grid[axis]
        reps = list(grid) + [1]
        reps[axis] = 1
        cos_parts.append(np.tile(np.repeat(np.cos(angles), 2, axis=1).reshape(shape), reps))
        sin_parts.append(np.tile(np.repeat(np.sin(angles), 2, axis=1).reshape(shape), reps))
    n = int(np.prod(grid))
    cos = np.concatenate(cos_parts, -1).reshape(n, head_dim).astype(np.float32)
    sin = np.concatenate(sin_parts, -1).reshape(n, head_dim).astype(np.float32)
    return cos, sin


def table(grid: tuple[int, int, int], head_dim: int, max_seq_len: int = 1024,
          theta: float = 10000.0) -> tuple[jax.Array, jax.Array]:
    """cos, sin ``(N, head_dim)`` for the ``(F', H', W')`` token grid (tokens in f, h, w order)."""
    cos, sin = _table_np(tuple(int(g) for g in grid), int(head_dim), int(max_seq_len), float(theta))
    return jnp.asarray(cos), jnp.asarray(sin)


def apply(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate ``x (B, N, H, Dh)`` pairwise: ``(x0, x1) -> (x0 c - x1 s, x0 s + x1 c)``, in float32."""
    x32 = x.astype(jnp.float32)
    x0, x1 = x32[..., 0::2], x32[..., 1::2]
    c, s = cos[None, :, None, 0::2], sin[None, :, None, 1::2]
    out = jnp.stack([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)
    return out.reshape(x.shape).astype(x.dtype)
