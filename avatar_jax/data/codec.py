"""Bytes codec for one record: a dict of numpy arrays, self-describing, no pickle.

Layout: ``uint32 header length (little endian) | JSON header | raw buffers``. The header maps each
name to ``[dtype, shape, offset, nbytes]`` with offsets relative to the end of the header. Buffers are
C-contiguous; decoding returns read-only views of the record bytes (no copy).
"""

from __future__ import annotations

import json
import struct

import numpy as np

from avatar_jax.errors import InputError

_LEN = struct.Struct("<I")


def encode(arrays: dict[str, np.ndarray]) -> bytes:
    """``{name: array}`` -> bytes. Object, void and non-native-endian dtypes are refused."""
    header, buffers, offset = {}, [], 0
    for name, value in arrays.items():
        a = np.asarray(value)  # (ascontiguousarray would turn a 0-d array into (1,))
        if a.dtype.kind not in "biuf" or not a.dtype.isnative:
            raise InputError(f"record field {name!r}: unsupported dtype {a.dtype}")
        data = a.tobytes(order="C")
        header[name] = [a.dtype.str, list(a.shape), offset, len(data)]
        buffers.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([_LEN.pack(len(head)), head, *buffers])


def decode(data: bytes) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode`; raises InputError on truncated or malformed bytes."""
    try:
        (n,) = _LEN.unpack_from(data, 0)
        header = json.loads(bytes(data[_LEN.size:_LEN.size + n]))
        base = _LEN.size + n
        out = {}
        for name, (dtype, shape, offset, nbytes) in header.items():
            if base + offset + nbytes > len(data):
                raise ValueError(f"field {name!r} runs past the end of the record")
            dt = np.dtype(dtype)
            if nbytes == 0:
                out[name] = np.zeros(tuple(shape), dt)
                continue
            flat = np.frombuffer(data, dtype=dt, count=nbytes // dt.itemsize, offset=base + offset)
            out[name] = flat.reshape(tuple(shape))
        return out
    except (struct.error, ValueError, TypeError, KeyError) as e:
        raise InputError(f"malformed record: {e}") from e
