"""Building blocks of the teacher ports (Wan2.1 DiT, Wan VAE, umT5): dtype-aware dense layers, norms
computed in float32, and LoRA.

Every parameter carries logical axis names (``out_sharding`` metadata, no eager sharding), mapped to the
mesh by :data:`avatar_jax.train.sharding.LOGICAL_AXIS_RULES`. ``dtype`` is the compute dtype (e.g.
bfloat16), ``param_dtype`` the storage dtype; norms and their statistics always run in float32, as the
upstream ``FP32LayerNorm`` / RMS norms do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.audio.layers import Axis, axes


def dense(din: int, dout: int, in_axis: Axis, out_axis: Axis, *, use_bias: bool = True, dtype=None,
          param_dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.Linear:
    """Linear layer, kernel ``(din, dout)`` with axes ``(in_axis, out_axis)``, computing in ``dtype``."""
    return nnx.Linear(din, dout, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                      kernel_metadata=axes(in_axis, out_axis), bias_metadata=axes(out_axis))


def layer_norm(x: jax.Array, eps: float, scale: jax.Array | None = None, bias: jax.Array | None = None) -> jax.Array:
    """LayerNorm over the last axis in float32 (biased variance, as torch); returns float32."""
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + eps)
    if scale is not None:
        y = y * scale.astype(jnp.float32)
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y


class LayerNorm(nnx.Module):
    """Affine LayerNorm in float32 (``FP32LayerNorm``), output cast back to the input dtype."""

    def __init__(self, dim: int, eps: float, axis: Axis = "embed", *, param_dtype=jnp.float32):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), **axes(axis))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype), **axes(axis))

    def __call__(self, x: jax.Array) -> jax.Array:
        return layer_norm(x, self.eps, self.scale[...], self.bias[...]).astype(x.dtype)


class RMSNorm(nnx.Module):
    """``x * rsqrt(mean(x^2) + eps) * weight`` over the last axis (torch ``nn.RMSNorm``), statistics in float32."""

    def __init__(self, dim: int, eps: float, axis: Axis = "heads", *, param_dtype=jnp.float32):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), **axes(axis))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), -1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class LoRA(nnx.Module):
    """Low-rank update ``x @ A @ B * (alpha / rank)``; ``B`` starts at zero so the update starts at zero.

    Parameters are :class:`nnx.LoRAParam` (a subclass of ``nnx.Param``), so ``nnx.state(model, nnx.LoRAParam)``
    selects exactly the trainable adapter weights while the base model stays frozen.
    """

    def __init__(self, din: int, dout: int, rank: int, in_axis: Axis, out_axis: Axis, *, alpha: float | None = None,
                 dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.scaling = float(alpha if alpha is not None else rank) / rank
        self.dtype = dtype
        init = jax.nn.initializers.he_uniform()
        self.a = nnx.LoRAParam(init(rngs.params(), (din, rank), param_dtype), **axes(in_axis, None))
        self.b = nnx.LoRAParam(jnp.zeros((rank, dout), param_dtype), **axes(None, out_axis))

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or x.dtype
        return (x.astype(dtype) @ self.a[...].astype(dtype)) @ self.b[...].astype(dtype) * self.scaling
