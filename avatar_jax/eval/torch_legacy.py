"""Read a PyTorch state dict in either on-disk format into numpy, without torch.

The public evaluation checkpoints predate torch 1.6 (SyncNet's ``syncnet_v2.model``, pytorch-fid's
``pt_inception-*.pth`` era), so besides the zip format (:mod:`avatar_jax.audio.torch_pickle`) this
reads torch's *legacy* serialization: five consecutive pickles in one stream

    magic number (0x1950a86a20f9469cfc6c), protocol version (1001), sys_info {little_endian, type_sizes},
    the state dict (each storage a persistent id ("storage", <StorageClass>, key, device, numel[, view])),
    the sorted list of storage keys,

followed, for each key in that order, by an int64 element count and the raw storage bytes. Tensors are
rebuilt after the storages are read. The unpickler resolves only the globals a state dict needs (the
allow-list of :mod:`avatar_jax.audio.torch_pickle`); anything else is refused.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile

import numpy as np

from avatar_jax.audio import torch_pickle
from avatar_jax.audio.torch_pickle import load_torch_state_dict
from avatar_jax.errors import InputError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


class _Storage:
    """A storage whose bytes come after the pickles: filled in by :func:`_read_legacy`."""

    def __init__(self, dtype: np.dtype, key: str, view: tuple | None):
        self.dtype, self.key, self.view = dtype, key, view
        self.data: np.ndarray | None = None


class _LazyTensor(collections.namedtuple("_LazyTensor", "storage offset size stride")):
    def materialize(self) -> np.ndarray:
        data = self.storage.data
        if self.storage.view is not None:  # (view_key, view_offset, view_numel) of an older torch
            _, start, numel = self.storage.view
            data = data[start : start + numel]
        return torch_pickle._rebuild_tensor(data, self.offset, self.size, self.stride)


def _lazy_rebuild(storage, offset, size, stride, *_unused):
    return _LazyTensor(storage, int(offset), tuple(size), tuple(stride))


_LEGACY_ALLOWED = {
    **torch_pickle._ALLOWED,
    ("torch._utils", "_rebuild_tensor_v2"): _lazy_rebuild,
    ("torch._utils", "_rebuild_tensor"): _lazy_rebuild,  # torch <= 0.3 (no requires_grad argument)
}


class _LegacyUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str, storages: dict):
        super().__init__(file, encoding="latin1")
        self._path, self._storages = path, storages

    def find_class(self, module, name):
        if module == "torch" and name in torch_pickle._STORAGE_DTYPES:
            return torch_pickle._StorageType(name)
        if (module, name) in _LEGACY_ALLOWED:
            return _LEGACY_ALLOWED[(module, name)]
        raise InputError(f"{self._path}: refusing to unpickle {module}.{name} (not part of a plain state dict)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise InputError(f"{self._path}: unexpected persistent id {pid!r} in the pickle")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, torch_pickle._StorageType):
            raise InputError(f"{self._path}: unsupported storage type {storage_type!r}")
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            view_key, view_offset, view_numel = view
            base = self._storages.setdefault(str(key), _Storage(storage_type.dtype, str(key), None))
            storage = _Storage(storage_type.dtype, str(key), (str(view_key), int(view_offset), int(view_numel)))
            storage.base = base
            return storage
        return self._storages.setdefault(key, _Storage(storage_type.dtype, key, None))


def _read_legacy(f, path: str) -> dict:
    def header(what):
        try:
            return pickle.load(f, encoding="latin1")
        except Exception as e:  # noqa: BLE001 - a foreign file: report it as such
            raise InputError(f"{path}: not a PyTorch state-dict file (could not read the {what}: {e})") from None

    if header("magic number") != MAGIC_NUMBER:
        raise InputError(f"{path}: not a PyTorch file (no zip archive and no legacy torch.save magic number)")
    if header("protocol version") != PROTOCOL_VERSION:
        raise InputError(f"{path}: unsupported legacy PyTorch protocol version")
    sys_info = header("system info")
    if not sys_info.get("little_endian", True):
        raise InputError(f"{path}: big-endian legacy PyTorch files are not supported")
    storages: dict[str, _Storage] = {}
    obj = _LegacyUnpickler(f, path, storages).load()
    keys = pickle.load(f, encoding="latin1")
    for key in keys:
        storage = storages.get(str(key))
        numel = int(np.frombuffer(f.read(8), "<i8")[0])
        raw = f.read(numel * storage.dtype.itemsize)
        if len(raw) != numel * storage.dtype.itemsize:
            raise InputError(f"{path}: truncated storage {key}")
        storage.data = np.frombuffer(raw, storage.dtype.newbyteorder("<"))
    for s in storages.values():  # views share the data of their base storage
        if s.data is None and hasattr(s, "base"):
            s.data = s.base.data
    return obj


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name: array}`` from a ``torch.save`` state dict, zip (torch >= 1.6) or legacy format."""
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        return load_torch_state_dict(path)
    with open(path, "rb") as fh:
        obj = _read_legacy(io.BytesIO(fh.read()), path)
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a state dict, the pickle holds a {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, _LazyTensor):
            raise InputError(f"{path}: entry {k!r} is not a tensor; expected a flat state dict")
        if v.storage.data is None:
            raise InputError(f"{path}: storage of {k!r} is missing from the file")
        out[k] = v.materialize()
    return out
