"""pytorch-fid's InceptionV3 (the TensorFlow FID network) up to the 2048-D pool3 features, in Flax NNX,
and its converter for ``pt_inception-2015-12-05-6726825d.pth``.

    images (B, H, W, 3) in [0, 1] ──► bilinear resize to 299 x 299 (align_corners=False, no antialias)
      ──► 2x - 1 ──► stem (5 BasicConv2d, 2 max-pools) ──► Mixed_5b..5d (A) ──► 6a (B) ──► 6b..6e (C)
      ──► 7a (D) ──► 7b (E, avg-pool branch) ──► 7c (E, max-pool branch) ──► global mean ──► (B, 2048)

A BasicConv2d is conv (no bias) + batch norm (eps 1e-3) + ReLU. The FID variants of blocks A, C and E_1
average-pool without counting the padding; E_2 max-pools in its pool branch. Convolution widths are
read from the checkpoint (the parity test uses a narrower random network in the same layout); kernel
sizes, strides and paddings are the architecture's. The classifier (``fc``) is not used.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avatar_jax.errors import InputError
from avatar_jax.eval.torch_legacy import load_state_dict
from avatar_jax.eval.weights import assert_filled, build_abstract, require_file, set_batch_norm, set_conv

FETCH_ADVICE = (
    "provide pytorch-fid's Inception weights pt_inception-2015-12-05-6726825d.pth (the FID_WEIGHTS_URL "
    "release asset of pytorch-fid) as a local file; nothing is downloaded at run time"
)
SIZE = 299

# (kernel, stride, padding) of every BasicConv2d, by block type; full-size widths in _WIDTHS
_STEM = {
    "Conv2d_1a_3x3": (3, 2, 0),
    "Conv2d_2a_3x3": (3, 1, 0),
    "Conv2d_2b_3x3": (3, 1, 1),
    "Conv2d_3b_1x1": (1, 1, 0),
    "Conv2d_4a_3x3": (3, 1, 0),
}
_A = {
    "branch1x1": (1, 1, 0),
    "branch5x5_1": (1, 1, 0),
    "branch5x5_2": (5, 1, 2),
    "branch3x3dbl_1": (1, 1, 0),
    "branch3x3dbl_2": (3, 1, 1),
    "branch3x3dbl_3": (3, 1, 1),
    "branch_pool": (1, 1, 0),
}
_B = {"branch3x3": (3, 2, 0), "branch3x3dbl_1": (1, 1, 0), "branch3x3dbl_2": (3, 1, 1), "branch3x3dbl_3": (3, 2, 0)}
_R, _C = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))  # 1x7 and 7x1 factorised convs
_C_BLOCK = {
    "branch1x1": (1, 1, 0),
    "branch7x7_1": (1, 1, 0),
    "branch7x7_2": _R,
    "branch7x7_3": _C,
    "branch7x7dbl_1": (1, 1, 0),
    "branch7x7dbl_2": _C,
    "branch7x7dbl_3": _R,
    "branch7x7dbl_4": _C,
    "branch7x7dbl_5": _R,
    "branch_pool": (1, 1, 0),
}
_D = {
    "branch3x3_1": (1, 1, 0),
    "branch3x3_2": (3, 2, 0),
    "branch7x7x3_1": (1, 1, 0),
    "branch7x7x3_2": _R,
    "branch7x7x3_3": _C,
    "branch7x7x3_4": (3, 2, 0),
}
_E = {
    "branch1x1": (1, 1, 0),
    "branch3x3_1": (1, 1, 0),
    "branch3x3_2a": ((1, 3), 1, (0, 1)),
    "branch3x3_2b": ((3, 1), 1, (1, 0)),
    "branch3x3dbl_1": (1, 1, 0),
    "branch3x3dbl_2": (3, 1, 1),
    "branch3x3dbl_3a": ((1, 3), 1, (0, 1)),
    "branch3x3dbl_3b": ((3, 1), 1, (1, 0)),
    "branch_pool": (1, 1, 0),
}
BLOCKS = (
    ("Mixed_5b", "A"),
    ("Mixed_5c", "A"),
    ("Mixed_5d", "A"),
    ("Mixed_6a", "B"),
    ("Mixed_6b", "C"),
    ("Mixed_6c", "C"),
    ("Mixed_6d", "C"),
    ("Mixed_6e", "C"),
    ("Mixed_7a", "D"),
    ("Mixed_7b", "E1"),
    ("Mixed_7c", "E2"),
)
_LAYOUT = {"A": _A, "B": _B, "C": _C_BLOCK, "D": _D, "E1": _E, "E2": _E}


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


class BasicConv2d(nnx.Module):
    def __init__(self, cin: int, cout: int, kernel, stride, padding, *, rngs: nnx.Rngs):
        pad = _pair(padding)
        self.conv = nnx.Conv(
            cin, cout, _pair(kernel), strides=_pair(stride), padding=[(p, p) for p in pad], use_bias=False, rngs=rngs
        )
        self.bn = nnx.BatchNorm(cout, use_running_average=True, epsilon=1e-3, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.conv(x)))


def _avg_pool_exclude_pad(x):
    """3x3, stride 1, padding 1 average that divides by the number of real pixels (count_include_pad=False)."""
    window, strides, pad = (1, 3, 3, 1), (1, 1, 1, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)
    count = jax.lax.reduce_window(jnp.ones(x.shape[1:3] + (1,), x.dtype)[None], 0.0, jax.lax.add, window, strides, pad)
    return total / count


def _max_pool(x, stride, padding=0):
    return nnx.max_pool(x, (3, 3), strides=(stride, stride), padding=[(padding, padding)] * 2)


class Mixed(nnx.Module):
    """One Inception block: its BasicConv2d layers by upstream name, and the branch wiring of its kind."""

    def __init__(self, kind: str, widths: dict, *, rngs: nnx.Rngs):
        self.kind = kind
        self.layers = nnx.Dict({n: BasicConv2d(*widths[n], *kst, rngs=rngs) for n, kst in _LAYOUT[kind].items()})

    def __call__(self, x):
        c = self.layers
        if self.kind == "A":
            b5 = c["branch5x5_2"](c["branch5x5_1"](x))
            b3 = c["branch3x3dbl_3"](c["branch3x3dbl_2"](c["branch3x3dbl_1"](x)))
            return jnp.concatenate([c["branch1x1"](x), b5, b3, c["branch_pool"](_avg_pool_exclude_pad(x))], -1)
        if self.kind == "B":
            b3d = c["branch3x3dbl_3"](c["branch3x3dbl_2"](c["branch3x3dbl_1"](x)))
            return jnp.concatenate([c["branch3x3"](x), b3d, _max_pool(x, 2)], -1)
        if self.kind == "C":
            b7 = c["branch7x7_3"](c["branch7x7_2"](c["branch7x7_1"](x)))
            b7d = x
            for i in range(1, 6):
                b7d = c[f"branch7x7dbl_{i}"](b7d)
            return jnp.concatenate([c["branch1x1"](x), b7, b7d, c["branch_pool"](_avg_pool_exclude_pad(x))], -1)
        if self.kind == "D":
            b3 = c["branch3x3_2"](c["branch3x3_1"](x))
            b7 = c["branch7x7x3_4"](c["branch7x7x3_3"](c["branch7x7x3_2"](c["branch7x7x3_1"](x))))
            return jnp.concatenate([b3, b7, _max_pool(x, 2)], -1)
        b3 = c["branch3x3_1"](x)
        b3 = jnp.concatenate([c["branch3x3_2a"](b3), c["branch3x3_2b"](b3)], -1)
        bd = c["branch3x3dbl_2"](c["branch3x3dbl_1"](x))
        bd = jnp.concatenate([c["branch3x3dbl_3a"](bd), c["branch3x3dbl_3b"](bd)], -1)
        pool = _avg_pool_exclude_pad(x) if self.kind == "E1" else _max_pool(x, 1, 1)
        return jnp.concatenate([c["branch1x1"](x), b3, bd, c["branch_pool"](pool)], -1)


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of torch's bilinear interpolate, align_corners=False, no antialias."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m.astype(np.float32)


def resize_bilinear(images: jax.Array, size: int = SIZE) -> jax.Array:
    """(B, H, W, C) -> (B, size, size, C) as ``F.interpolate(mode='bilinear', align_corners=False)``."""
    rows = jnp.asarray(_resize_matrix(images.shape[1], size))
    cols = jnp.asarray(_resize_matrix(images.shape[2], size))
    hi = jax.lax.Precision.HIGHEST
    return jnp.einsum("ih,jw,bhwc->bijc", rows, cols, images, precision=hi)


class InceptionV3FID(nnx.Module):
    def __init__(self, widths: dict[str, tuple[int, int]], *, rngs: nnx.Rngs | None = None):
        """widths: ``{"Conv2d_1a_3x3": (cin, cout), "Mixed_5b.branch1x1": (cin, cout), ...}``."""
        rngs = rngs or nnx.Rngs(0)
        self.stem = nnx.Dict({n: BasicConv2d(*widths[n], *kst, rngs=rngs) for n, kst in _STEM.items()})
        self.blocks = nnx.Dict(
            {name: Mixed(kind, {b: widths[f"{name}.{b}"] for b in _LAYOUT[kind]}, rngs=rngs) for name, kind in BLOCKS}
        )

    def __call__(self, images: jax.Array, resize: bool = True) -> jax.Array:
        """(B, H, W, 3) RGB in [0, 1] -> (B, D) pool3 features (D = 2048 for the real network)."""
        x = resize_bilinear(images.astype(jnp.float32)) if resize else images.astype(jnp.float32)
        x = 2.0 * x - 1.0
        s = self.stem
        x = _max_pool(s["Conv2d_2b_3x3"](s["Conv2d_2a_3x3"](s["Conv2d_1a_3x3"](x))), 2)
        x = _max_pool(s["Conv2d_4a_3x3"](s["Conv2d_3b_1x1"](x)), 2)
        for name, _ in BLOCKS:
            x = self.blocks[name](x)
        return x.mean(axis=(1, 2))


def _conv_names():
    yield from _STEM
    for name, kind in BLOCKS:
        for b in _LAYOUT[kind]:
            yield f"{name}.{b}"


def load_inception(path: str | os.PathLike | None) -> InceptionV3FID:
    """The FID Inception of a local ``pt_inception-2015-12-05-*.pth`` (any torch.save format), no torch."""
    path = require_file(path, "FID Inception weights pt_inception-2015-12-05-6726825d.pth", FETCH_ADVICE)
    state = load_state_dict(path)
    widths = {}
    for n in _conv_names():
        key = f"{n}.conv.weight"
        if key not in state:
            raise InputError(f"{path}: {key!r} missing: not pytorch-fid's Inception state dict")
        widths[n] = (int(state[key].shape[1]), int(state[key].shape[0]))
    model = build_abstract(lambda: InceptionV3FID(widths))
    for n in _conv_names():
        block, _, branch = n.rpartition(".")
        layer = model.blocks[block].layers[branch] if block else model.stem[n]
        set_conv(layer.conv, state, f"{n}.conv", path)
        set_batch_norm(layer.bn, state, f"{n}.bn", path)
    assert_filled(model, path)
    return model
