"""Standard 3DGS ``.ply`` files (the layout other 3DGS viewers read), written and read losslessly.

Binary little-endian float32 vertex properties in this order: ``x y z nx ny nz f_dc_0..2
f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3``. As in 3DGS, ``f_rest`` is channel-major (all red
higher-order coefficients, then green, then blue), ``opacity`` is the logit, ``scale_*`` the log-scale
and ``rot_*`` the quaternion (w,x,y,z). Normals are written as zeros. Template bindings are not part of
this format; :mod:`avatar_jax.gaussians.avatar_file` stores them.
"""

from __future__ import annotations

import os

import numpy as np

from avatar_jax.errors import InputError


def _property_names(num_rest: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(num_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_ply(path: str, means, log_scales, quats, opacity_logits, sh) -> None:
    """Write ``N`` Gaussians: ``means (N,3)``, ``log_scales (N,3)``, ``quats (N,4)``, ``opacity_logits (N,)``,
    ``sh (N,K,3)``. Values are stored as float32 (what 3DGS tools expect)."""
    means = np.asarray(means, np.float32)
    n = means.shape[0]
    sh = np.asarray(sh, np.float32).reshape(n, -1, 3)
    rest = np.transpose(sh[:, 1:], (0, 2, 1)).reshape(n, -1)  # channel-major, like 3DGS
    cols = [means, np.zeros((n, 3), np.float32), sh[:, 0], rest,
            np.asarray(opacity_logits, np.float32).reshape(n, 1), np.asarray(log_scales, np.float32).reshape(n, 3),
            np.asarray(quats, np.float32).reshape(n, 4)]
    table = np.ascontiguousarray(np.concatenate(cols, axis=1), dtype="<f4")
    names = _property_names(rest.shape[1])
    header = "ply\nformat binary_little_endian 1.0\n" f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(table.tobytes())


def read_ply(path: str) -> dict[str, np.ndarray]:
    """Read a 3DGS ``.ply`` -> dict with ``means, log_scales, quats, opacity_logits, sh (N,K,3)`` (float32)."""
    if not os.path.exists(path):
        raise InputError(f"no such .ply file: {path}")
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise InputError(f"{path} is not a .ply file")
        names, dtypes, n, fmt = [], [], None, None
        sizes = {"float": "f4", "float32": "f4", "double": "f8", "uchar": "u1", "int": "i4", "uint": "u4"}
        while True:
            line = f.readline()
            if not line:
                raise InputError(f"{path}: header has no end_header")
            words = line.decode("ascii", "replace").split()
            if not words:
                continue
            if words[0] == "format":
                fmt = words[1]
            elif words[:2] == ["element", "vertex"]:
                n = int(words[2])
            elif words[0] == "element" and n is not None:
                raise InputError(f"{path}: only a single 'vertex' element is supported")
            elif words[0] == "property":
                if words[1] not in sizes:
                    raise InputError(f"{path}: unsupported property type {words[1]!r}")
                dtypes.append(sizes[words[1]])
                names.append(words[2])
            elif words[0] == "end_header":
                break
        if fmt != "binary_little_endian" or n is None:
            raise InputError(f"{path}: expected a binary_little_endian vertex element, got format {fmt}")
        dtype = np.dtype([(name, "<" + t) for name, t in zip(names, dtypes, strict=True)])
        data = np.frombuffer(f.read(n * dtype.itemsize), dtype=dtype, count=n)
    missing = [k for k in ("x", "y", "z", "f_dc_0", "opacity", "scale_0", "rot_0") if k not in names]
    if missing:
        raise InputError(f"{path}: not a 3DGS .ply, missing {missing}")
    col = lambda keys: np.stack([data[k].astype(np.float32) for k in keys], axis=1)  # noqa: E731
    rest_names = sorted((k for k in names if k.startswith("f_rest_")), key=lambda k: int(k.split("_")[-1]))
    num_rest = len(rest_names) // 3
    rest = col(rest_names).reshape(n, 3, num_rest).transpose(0, 2, 1) if num_rest else np.zeros((n, 0, 3), np.float32)
    sh = np.concatenate([col(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None], rest], axis=1)
    return dict(means=col(["x", "y", "z"]), log_scales=col(["scale_0", "scale_1", "scale_2"]),
                quats=col(["rot_0", "rot_1", "rot_2", "rot_3"]), opacity_logits=data["opacity"].astype(np.float32),
                sh=sh)
