"""Building blocks shared by the wav2vec2 and Whisper ports: sharded Linear / LayerNorm / Conv / Embed
factories, multi-head attention, activations, and the logical-axis view of a model's parameters.

Every parameter carries logical axis names in its NNX metadata (``out_sharding``), with eager
sharding off: modules are built without a mesh, and the trainer maps the names to mesh axes through
:data:`avatar_jax.train.sharding.LOGICAL_AXIS_RULES` (see :func:`partition_specs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.errors import ConfigError
from avatar_jax.train.sharding import LOGICAL_AXIS_RULES, logical_to_mesh_spec

Axis = str | None


def axes(*names: Axis) -> dict:
    """Variable metadata naming the logical axes of a parameter (no eager sharding: no mesh needed)."""
    return {"out_sharding": tuple(names), "eager_sharding": False}


def linear(din: int, dout: int, in_axis: Axis, out_axis: Axis, *, use_bias: bool = True,
           rngs: nnx.Rngs) -> nnx.Linear:
    """Dense layer, kernel ``(din, dout)`` with axes ``(in_axis, out_axis)``, bias ``(dout,)``."""
    return nnx.Linear(din, dout, use_bias=use_bias, rngs=rngs,
                      kernel_metadata=axes(in_axis, out_axis), bias_metadata=axes(out_axis))


def layer_norm(dim: int, eps: float, axis: Axis = "embed", *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # use_fast_variance=False: E[(x-mean)^2] like the upstream kernels, not E[x^2]-mean^2 (cancellation).
    return nnx.LayerNorm(dim, epsilon=eps, use_fast_variance=False, rngs=rngs,
                         scale_metadata=axes(axis), bias_metadata=axes(axis))


def conv1d(cin: int, cout: int, kernel: int, *, stride: int = 1, padding: int = 0, groups: int = 1,
           use_bias: bool = True, in_axis: Axis = "conv_in", out_axis: Axis = "conv_out",
           rngs: nnx.Rngs) -> nnx.Conv:
    """1-D convolution on ``(B, T, C)``; kernel ``(kernel, cin // groups, cout)``."""
    return nnx.Conv(cin, cout, kernel_size=(kernel,), strides=(stride,), padding=((padding, padding),),
                    feature_group_count=groups, use_bias=use_bias, rngs=rngs,
                    kernel_metadata=axes(None, in_axis, out_axis), bias_metadata=axes(out_axis))


def embed(num: int, dim: int, row_axis: Axis, *, rngs: nnx.Rngs) -> nnx.Embed:
    """Lookup table ``(num, dim)``; the row axis is e.g. ``"vocab"`` or None for positions."""
    return nnx.Embed(num, dim, rngs=rngs, embedding_metadata=axes(row_axis, "embed"))


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation the upstream config names (``hidden_act`` and friends)."""
    if name not in _ACTIVATIONS:
        raise ConfigError(f"unsupported activation {name!r}; supported: {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name]


class Attention(nnx.Module):
    """Multi-head dot-product attention with separate q/k/v/out projections.

    Queries are scaled by ``head_dim ** -0.5``. ``k_bias=False`` matches Whisper (no key bias).
    Split into :meth:`keys_values` and :meth:`attend` so that a decoder can cache keys and values.
    """

    def __init__(self, dim: int, heads: int, *, k_bias: bool = True, rngs: nnx.Rngs):
        if dim % heads:
            raise ConfigError(f"hidden size {dim} is not divisible by the number of heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.q_proj = linear(dim, dim, "embed", "heads", rngs=rngs)
        self.k_proj = linear(dim, dim, "embed", "heads", use_bias=k_bias, rngs=rngs)
        self.v_proj = linear(dim, dim, "embed", "heads", rngs=rngs)
        self.out_proj = linear(dim, dim, "heads", "embed", rngs=rngs)

    def _split(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:-1], self.heads, self.head_dim)

    def keys_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``x (B, S, D)`` -> keys, values ``(B, S, H, Dh)``."""
        return self._split(self.k_proj(x)), self._split(self.v_proj(x))

    def attend(self, x: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Queries from ``x (B, T, D)`` against ``k, v (B, S, H, Dh)``.

        ``mask``: boolean, broadcastable to ``(B, H, T, S)``; True where a query may look. Returns (B, T, D).
        """
        q = self._split(self.q_proj(x)) * (self.head_dim ** -0.5)
        logits = jnp.einsum("bthd,bshd->bhts", q, k).astype(jnp.float32)
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhts,bshd->bthd", weights, v)
        return self.out_proj(out.reshape(*out.shape[:2], -1))

    def __call__(self, x: jax.Array, context: jax.Array | None = None, mask: jax.Array | None = None) -> jax.Array:
        """Self-attention (``context`` None) or cross-attention onto ``context (B, S, D)``."""
        k, v = self.keys_values(x if context is None else context)
        return self.attend(x, k, v, mask)


def conv_out_length(length: int, kernels, strides, paddings=None) -> int:
    """Output length of a stack of 1-D convolutions (floor rule), for an input of ``length`` samples."""
    paddings = paddings or (0,) * len(kernels)
    for k, s, p in zip(kernels, strides, paddings, strict=True):
        length = (length + 2 * p - k) // s + 1
    return max(length, 0)


def logical_axes(module: nnx.Module) -> dict[str, tuple[Axis, ...]]:
    """``{"path/to/param": logical axis names}`` for every ``nnx.Param`` of ``module``."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        names = var.get_metadata().get("out_sharding")
        out["/".join(str(p) for p in path)] = None if names is None else tuple(names)
    return out


def partition_specs(module: nnx.Module, rules=LOGICAL_AXIS_RULES) -> nnx.State:
    """The ``nnx.Param`` state of ``module`` with each value replaced by its mesh ``PartitionSpec``."""

    def spec(var):
        names = var.get_metadata().get("out_sharding")
        chex.assert_equal(len(names), var.get_value().ndim)
        return var.replace(logical_to_mesh_spec(names, rules))

    return jax.tree.map(spec, nnx.state(module, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable))


def sinusoids(length: int, dim: int, max_timescale: float = 10000.0) -> jax.Array:
    """Whisper's fixed position table ``(length, dim)``: sin on the first half, cos on the second."""
    if dim % 2:
        raise ConfigError(f"sinusoidal positions need an even width, got {dim}")
    increment = math.log(max_timescale) / (dim // 2 - 1)
    inv = jnp.exp(-increment * jnp.arange(dim // 2, dtype=jnp.float32))
    t = jnp.arange(length, dtype=jnp.float32)[:, None] * inv[None, :]
    return jnp.concatenate([jnp.sin(t), jnp.cos(t)], axis=1)

