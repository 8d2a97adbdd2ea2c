"""Load the teacher's upstream checkpoints (diffusers / transformers on-disk formats) into our NNX modules.

Reads ``config.json`` and safetensors only (one file or a sharded ``*.safetensors.index.json``): no
pickle, no torch. Layout changes on the way in: torch ``Linear`` weights ``(out, in)`` become kernels
``(in, out)``; ``Conv3d`` weights ``(O, I, t, h, w)`` become ``(t, h, w, I, O)`` (``Conv2d`` likewise);
the DiT's patch-embedding ``Conv3d`` becomes a dense kernel over flattened ``(pt, ph, pw, C)`` patches.

The expected directory is a diffusers Wan2.1 pipeline folder (see :data:`TEACHER_LAYOUT`); a missing
piece raises :class:`TeacherWeightsError` naming that layout and what to fetch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, MutableMapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avatar_jax.errors import InputError

TEACHER_LAYOUT = """\
TEACHER_DIR/                       (a diffusers Wan2.1 pipeline folder, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers)
  transformer/config.json          WanTransformer3DModel config
  transformer/diffusion_pytorch_model.safetensors
      or diffusion_pytorch_model.safetensors.index.json + diffusion_pytorch_model-0000k-of-0000n.safetensors
  vae/config.json                  AutoencoderKLWan config
  vae/diffusion_pytorch_model.safetensors
  text_encoder/config.json         UMT5EncoderModel config (optional when text embeddings are precomputed)
  text_encoder/model.safetensors   (or model.safetensors.index.json + shards)"""

FETCH_HINT = ("fetch Wan-AI/Wan2.1-T2V-1.3B-Diffusers (or -14B-Diffusers) on a machine with network, e.g. "
              "`hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --local-dir TEACHER_DIR`, and copy the folder here")


class TeacherWeightsError(InputError):
    """Teacher weights are missing, incomplete or of an unsupported kind (the message names the layout)."""


def _missing(what: str) -> TeacherWeightsError:
    return TeacherWeightsError(f"{what}; expected layout:\n{TEACHER_LAYOUT}\n{FETCH_HINT}")


def read_config(path: str, component: str) -> dict:
    """``config.json`` of the component folder ``path`` as a dict."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise _missing(f"{component} weights directory {path!r} does not exist")
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        raise _missing(f"{path} has no config.json ({component})")
    with open(file) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise TeacherWeightsError(f"{file} is not valid JSON: {e}") from e


class LazyWeights(MutableMapping):
    """``{upstream key: array}`` over safetensors files, each tensor read (memory-mapped) only when asked
    for, so that converting a 14B checkpoint never holds all of it in host memory at once. Deleting a key
    only forgets it (for tensors the converter deliberately skips)."""

    def __init__(self, files: list[str]):
        from safetensors import safe_open

        self._file: dict[str, str] = {}
        for file in files:
            try:
                with safe_open(file, framework="numpy") as f:
                    self._file.update({k: file for k in f.keys()})
            except Exception as e:  # corrupt header, truncated file
                raise TeacherWeightsError(f"cannot read {file}: {e}") from e

    def __getitem__(self, key: str) -> np.ndarray:
        from safetensors import safe_open

        file = self._file[key]
        try:
            with safe_open(file, framework="numpy") as f:
                return f.get_tensor(key)
        except TypeError:  # bfloat16: numpy has no such dtype, go through ml_dtypes (flax framework)
            with safe_open(file, framework="flax") as f:
                return np.asarray(f.get_tensor(key))
        except Exception as e:
            raise TeacherWeightsError(f"cannot read tensor {key!r} from {file}: {e}") from e

    def __setitem__(self, key, value):
        raise TypeError("LazyWeights is read-only")

    def __delitem__(self, key: str) -> None:
        del self._file[key]

    def __iter__(self):
        return iter(self._file)

    def __len__(self) -> int:
        return len(self._file)


WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors")


def read_weights(path: str, component: str) -> LazyWeights:
    """``{upstream key: array}`` (read lazily) from ``path``: one safetensors file or a sharded index of them."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise _missing(f"{component} weights directory {path!r} does not exist")
    for name in WEIGHT_NAMES:
        file = os.path.join(path, name)
        if os.path.isfile(file):
            return LazyWeights([file])
        index = file + ".index.json"
        if os.path.isfile(index):
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            files = []
            for shard in shards:
                files.append(os.path.join(path, shard))
                if not os.path.isfile(files[-1]):
                    raise _missing(f"{index} lists shard {shard}, which is missing from {path}")
            return LazyWeights(files)
    if any(f.endswith((".bin", ".pt", ".pth", ".ckpt")) for f in os.listdir(path)):
        raise TeacherWeightsError(f"{path} holds only pickled weights; convert them to safetensors (no pickle is read)")
    raise _missing(f"{path} has no safetensors weights ({component})")


# ---------------------------------------------------------------------------------------------- filling

Transform = Callable[[np.ndarray], np.ndarray]


def linear_t(a: np.ndarray) -> np.ndarray:
    return a.T


def conv3d_t(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 3, 4, 1, 0)


def conv2d_t(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 3, 1, 0)


def squeeze(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


def copy(a: np.ndarray) -> np.ndarray:
    return a


Plan = list[tuple[tuple, str, Transform]]


def variable(model: nnx.Module, path: tuple) -> nnx.Variable:
    node = model
    for p in path:
        node = node[p] if isinstance(p, int) else getattr(node, p)
    return node


def fill(model: nnx.Module, weights: dict, plan: Plan, path: str, dtype=None, mesh=None) -> None:
    """Set every parameter named in ``plan`` from ``weights`` (checking shapes), cast to ``dtype`` or the
    parameter's own dtype; unused upstream tensors are an error (an unknown variant of the model).

    With a ``mesh``, each parameter goes straight to its sharding (its logical axes through the rules
    table), one tensor at a time, so a model larger than one device never sits whole on any of them.
    """
    from avatar_jax.train.sharding import named_sharding

    used = set()
    for target, key, transform in plan:
        if key not in weights:
            raise TeacherWeightsError(f"{path}: tensor {key!r} is missing from the checkpoint")
        var = variable(model, target)
        array = transform(np.asarray(weights[key]).astype(np.float32))
        if tuple(array.shape) != tuple(var.shape):
            raise TeacherWeightsError(
                f"{path}: tensor {key!r} of shape {tuple(np.shape(weights[key]))} does not fit parameter "
                f"{'/'.join(map(str, target))} of shape {tuple(var.shape)}")
        value = array.astype(dtype or var.dtype)
        if mesh is not None:
            names = var.get_metadata().get("out_sharding") or (None,) * value.ndim
            var.set_value(jax.device_put(value, named_sharding(mesh, tuple(names))))
        else:
            var.set_value(jnp.asarray(value))
        used.add(key)
    extra = sorted(set(weights) - used)
    if extra:
        raise TeacherWeightsError(f"{path}: {len(extra)} tensors are not part of the supported model, e.g. {extra[:5]}")
    for p, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if not hasattr(var.get_value(), "devices"):
            raise AssertionError(f"converter bug: parameter {'/'.join(map(str, p))} was not loaded")


def linear(target: tuple, key: str, bias: bool = True) -> Plan:
    plan = [((*target, "kernel"), f"{key}.weight", linear_t)]
    if bias:
        plan.append(((*target, "bias"), f"{key}.bias", copy))
    return plan
