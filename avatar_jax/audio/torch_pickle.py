"""Read a PyTorch ``torch.save`` state dict (``pytorch_model.bin``) into numpy, without torch.

The modern format (torch >= 1.6) is a zip archive ``<name>/data.pkl`` + ``<name>/data/<key>``: the
pickle describes the dict and each tensor as ``_rebuild_tensor_v2(storage, offset, size, stride, ...)``
where ``storage`` is a persistent id ``("storage", <dtype storage class>, key, device, numel)`` naming
a raw little-endian buffer ``<name>/data/<key>`` in the archive.

The unpickler only resolves the handful of globals a state dict needs (an allow-list): any other
global is refused, so a malicious pickle cannot run code.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np

from avatar_jax.errors import InputError

# torch storage class name -> numpy dtype
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor(storage, offset, size, stride, *_unused):
    """A numpy copy of the strided view ``storage[offset:]`` with ``size`` / ``stride`` in elements."""
    size, stride = tuple(size), tuple(stride)
    if 0 in size:
        return np.zeros(size, storage.dtype)
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * storage.itemsize for s in stride), writeable=False
    )
    return np.array(view)


def _rebuild_parameter(data, *_unused):
    return data


def _rebuild_from_type_v2(func, _new_type, args, _state):
    # torch wraps Parameter subclasses this way; the payload is still a plain tensor rebuild
    return func(*args)


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): object,
    ("torch.nn.parameter", "Parameter"): object,
    ("torch", "Size"): tuple,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str, byteorder: str):
        super().__init__(file)
        self._archive, self._prefix, self._path = archive, prefix, path
        self._byteorder = "<" if byteorder == "little" else ">"
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise InputError(f"{self._path}: refusing to unpickle {module}.{name} (not part of a plain state dict)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise InputError(f"{self._path}: unexpected persistent id {pid!r} in the pickle")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise InputError(f"{self._path}: unsupported storage type {storage_type!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}data/{key}")
            self._storages[key] = np.frombuffer(raw, storage_type.dtype.newbyteorder(self._byteorder))
        storage = self._storages[key]
        return storage if storage.dtype == storage_type.dtype else storage.view(storage_type.dtype)


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name: array}`` from a zip-format ``torch.save`` file; arrays keep their dtype (bf16 via ml_dtypes)."""
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise InputError(
            f"{path} is not a zip-format PyTorch file (legacy torch<1.6 serialization is not supported); "
            f"re-save it with a recent torch, or convert it to model.safetensors"
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise InputError(f"{path}: expected one data.pkl in the archive, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if f"{prefix}byteorder" in archive.namelist():
            byteorder = archive.read(f"{prefix}byteorder").decode().strip()
        with archive.open(pickles[0]) as f:
            obj = _Unpickler(f, archive, prefix, path, byteorder).load()
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a state dict, the pickle holds a {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise InputError(f"{path}: entries {bad[:5]} are not tensors; expected a flat state dict")
    return dict(obj)
