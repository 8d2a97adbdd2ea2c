"""Small NNX building blocks with logical sharding axes on every parameter.

Parameters are annotated with logical axis names (``"embed"``, ``"mlp"``, ``"heads"``...) via the
``out_sharding`` metadata and created with eager sharding off; ``avatar_jax.train.sharding`` maps
them to the mesh with its single rules table, so no module ever names a mesh axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

Axes = tuple[str | None, ...]

# Parameters are placed by our own rules table (avatar_jax.train.sharding), not at creation time:
# without this, NNX would try to shard every annotated Variable eagerly and need a mesh to exist.
nnx.use_eager_sharding(False)


def linear(din: int, dout: int, axes: Axes, rngs: nnx.Rngs, *, zero_init: bool = False, use_bias: bool = True,
           dtype=jnp.float32, param_dtype=jnp.float32) -> nnx.Linear:
    """``nnx.Linear`` whose kernel carries ``axes`` (in, out) and bias ``axes[1:]``.

    ``zero_init`` zeroes the kernel: used for output layers that must start as "no change"
    (adaLN-zero / zero-conv style), so a fresh model holds the rest pose.
    """
    kernel_init = nnx.initializers.zeros_init() if zero_init else nnx.initializers.lecun_normal()
    return nnx.Linear(
        din, dout, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
        kernel_init=nnx.with_partitioning(kernel_init, axes),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), axes[1:]),
        rngs=rngs,
    )


class MLP(nnx.Module):
    """``din -> hidden -> dout`` with GELU; ``zero_init_out`` zeroes the last kernel."""

    def __init__(self, din: int, hidden: int, dout: int, rngs: nnx.Rngs, *, zero_init_out: bool = False,
                 out_axis: str | None = None, dtype=jnp.float32, param_dtype=jnp.float32):
        self.fc1 = linear(din, hidden, ("embed", "mlp"), rngs, dtype=dtype, param_dtype=param_dtype)
        self.fc2 = linear(hidden, dout, ("mlp", out_axis), rngs, zero_init=zero_init_out, dtype=dtype,
                          param_dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x)))


class CrossAttention(nnx.Module):
    """Multi-head cross-attention ``softmax(q k^T / sqrt(d_head)) v`` followed by an output projection.

    Shapes: ``queries (..., Lq, d)``, ``context (..., Lk, d)`` -> ``(..., Lq, d)``. An optional
    boolean ``mask (..., Lq, Lk)`` (True = attend) excludes keys.
    """

    def __init__(self, d: int, num_heads: int, rngs: nnx.Rngs, *, dtype=jnp.float32, param_dtype=jnp.float32):
        if d % num_heads:
            raise ValueError(f"d_model={d} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.q = linear(d, d, ("embed", "heads"), rngs, dtype=dtype, param_dtype=param_dtype)
        self.k = linear(d, d, ("embed", "heads"), rngs, dtype=dtype, param_dtype=param_dtype)
        self.v = linear(d, d, ("embed", "heads"), rngs, dtype=dtype, param_dtype=param_dtype)
        self.out = linear(d, d, ("heads", "embed"), rngs, dtype=dtype, param_dtype=param_dtype)

    def split_heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[:-1] + (self.num_heads, x.shape[-1] // self.num_heads))

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Heads already split: ``q (..., Lq, h, dh)``, ``k, v (..., Lk, h, dh)`` -> ``(..., Lq, d)``."""
        scale = 1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], jnp.float32)).astype(q.dtype)
        logits = jnp.einsum("...qhd,...khd->...hqk", q * scale, k).astype(jnp.float32)
        if mask is not None:
            logits = jnp.where(mask[..., None, :, :], logits, -1e30)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("...hqk,...khd->...qhd", weights, v)
        return self.out(out.reshape(out.shape[:-2] + (-1,)))

    def __call__(self, queries: jax.Array, context: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return self.attend(self.split_heads(self.q(queries)), self.split_heads(self.k(context)),
                           self.split_heads(self.v(context)), mask)


def fourier_features(x: jax.Array, num_bands: int, max_freq: float = 64.0) -> jax.Array:
    """NeRF-style encoding of ``x (..., c)`` -> ``(..., c * (2 * num_bands + 1))`` (x itself included)."""
    freqs = jnp.pi * jnp.geomspace(1.0, max_freq, num_bands).astype(x.dtype)
    angles = x[..., None] * freqs  # (..., c, bands)
    enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return jnp.concatenate([x, enc.reshape(x.shape[:-1] + (-1,))], axis=-1)


def fourier_dim(channels: int, num_bands: int) -> int:
    """Output width of :func:`fourier_features`."""
    return channels * (2 * num_bands + 1)
