"""Local evaluation weights: find the file (or say exactly which one to provide), and copy PyTorch
conv / batch-norm / linear tensors into Flax NNX modules with shape checks.

Layouts: torch ``Conv2d`` (O, I, kh, kw) -> nnx (kh, kw, I, O); ``Conv3d`` (O, I, kt, kh, kw) ->
(kt, kh, kw, I, O); ``Linear`` (O, I) -> (I, O); ``BatchNorm`` weight/bias/running_mean/running_var ->
scale/bias/mean/var.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

from avatar_jax.errors import InputError


class MissingWeightsError(InputError):
    """A metric needs a pretrained file that is not on this machine; the message names it."""


def require_file(path: str | os.PathLike | None, what: str, advice: str) -> str:
    """``path`` if it is a file, else a :class:`MissingWeightsError` naming ``what`` and where to get it."""
    if path is None or not os.path.isfile(os.fspath(path)):
        where = f" (looked for {os.fspath(path)!r})" if path is not None else ""
        raise MissingWeightsError(f"{what} not found{where}: {advice}")
    return os.fspath(path)


def build_abstract(make):
    """The module ``make()`` would return, with shapes only (no random init: nothing compiles); fill every
    variable from a checkpoint, then :func:`assert_filled`."""
    return nnx.eval_shape(make)


def assert_filled(model: nnx.Module, path: str) -> None:
    for p, var in nnx.to_flat_state(nnx.state(model)):
        if not hasattr(var.get_value(), "devices"):
            raise InputError(f"{path}: nothing in the checkpoint for {'/'.join(map(str, p))}")


def _take(state: dict, key: str, shape: tuple | None, path: str) -> np.ndarray:
    if key not in state:
        raise InputError(f"{path}: tensor {key!r} is missing (not the expected checkpoint layout?)")
    value = np.asarray(state[key], np.float32)
    if shape is not None and value.shape != tuple(shape):
        raise InputError(f"{path}: tensor {key!r} has shape {value.shape}, expected {tuple(shape)}")
    return value


def set_conv(conv: nnx.Conv, state: dict, key: str, path: str) -> None:
    w = _take(state, f"{key}.weight", None, path)
    kernel = np.moveaxis(w, (0, 1), (-1, -2))  # (O, I, *k) -> (*k, I, O)
    if kernel.shape != conv.kernel.shape:
        raise InputError(f"{path}: {key}.weight has shape {w.shape}, the model expects {conv.kernel.shape}")
    conv.kernel.set_value(jnp.asarray(kernel))
    if conv.bias is not None:
        conv.bias.set_value(jnp.asarray(_take(state, f"{key}.bias", conv.bias.shape, path)))


def set_linear(linear: nnx.Linear, state: dict, key: str, path: str) -> None:
    w = _take(state, f"{key}.weight", linear.kernel.shape[::-1], path)
    linear.kernel.set_value(jnp.asarray(w.T))
    linear.bias.set_value(jnp.asarray(_take(state, f"{key}.bias", linear.bias.shape, path)))


def set_batch_norm(bn: nnx.BatchNorm, state: dict, key: str, path: str) -> None:
    shape = bn.mean.shape
    bn.scale.set_value(jnp.asarray(_take(state, f"{key}.weight", shape, path)))
    bn.bias.set_value(jnp.asarray(_take(state, f"{key}.bias", shape, path)))
    bn.mean.set_value(jnp.asarray(_take(state, f"{key}.running_mean", shape, path)))
    bn.var.set_value(jnp.asarray(_take(state, f"{key}.running_var", shape, path)))
