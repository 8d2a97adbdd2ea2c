"""The Kinetics-400 I3D of the FVD metric (piergiaj's PyTorch port, as shipped by the ``cd-fvd`` package)
in Flax NNX, and its converter for ``i3d_pretrained_400.pt``.

    videos (B, T, H, W, 3) uint8 ──► each frame bilinear to 224 x 224 (align_corners=False) ──► 2x/255 - 1
      ──► Conv3d_1a_7x7 (stride 2) ──► max-pool (1,3,3)/(1,2,2) ──► Conv3d_2b_1x1 ──► Conv3d_2c_3x3
      ──► max-pool ──► Mixed_3b, 3c ──► max-pool 3/2 ──► Mixed_4b..4f ──► max-pool 2/2 ──► Mixed_5b, 5c
      ──► average (2,7,7) stride 1 ──► logits (1x1x1 conv + bias) ──► mean over time ──► (B, 400)

Every conv is ``Unit3D``: TensorFlow "SAME" padding computed from the input size
(``max(k - s, 0)`` or ``max(k - n % s, 0)``, the extra pixel at the end), no bias, batch norm (eps 1e-5),
ReLU. Max-pools pad the same way with zeros (their inputs are post-ReLU). An Inception module
concatenates a 1x1, a 1x1->3x3x3, another 1x1->3x3x3 and a 3x3x3 max-pool->1x1 branch. FVD uses the
400 logits. Widths are read from the checkpoint (the parity test uses a narrower random network).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avatar_jax.errors import InputError
from avatar_jax.eval.inception import resize_bilinear
from avatar_jax.eval.torch_legacy import load_state_dict
from avatar_jax.eval.weights import assert_filled, build_abstract, require_file, set_batch_norm, set_conv

FETCH_ADVICE = (
    "provide the Kinetics-400 I3D weights i3d_pretrained_400.pt (the PyTorch I3D state dict that cd-fvd and "
    "TATS use) as a local file; nothing is downloaded at run time"
)
SIZE = 224

# (name, kind, kernel, stride): "unit" = Unit3D, "pool" = same-padded max-pool, "mixed" = Inception module
LAYERS = (
    ("Conv3d_1a_7x7", "unit", (7, 7, 7), (2, 2, 2)),
    ("MaxPool3d_2a_3x3", "pool", (1, 3, 3), (1, 2, 2)),
    ("Conv3d_2b_1x1", "unit", (1, 1, 1), (1, 1, 1)),
    ("Conv3d_2c_3x3", "unit", (3, 3, 3), (1, 1, 1)),
    ("MaxPool3d_3a_3x3", "pool", (1, 3, 3), (1, 2, 2)),
    ("Mixed_3b", "mixed", None, None),
    ("Mixed_3c", "mixed", None, None),
    ("MaxPool3d_4a_3x3", "pool", (3, 3, 3), (2, 2, 2)),
    ("Mixed_4b", "mixed", None, None),
    ("Mixed_4c", "mixed", None, None),
    ("Mixed_4d", "mixed", None, None),
    ("Mixed_4e", "mixed", None, None),
    ("Mixed_4f", "mixed", None, None),
    ("MaxPool3d_5a_2x2", "pool", (2, 2, 2), (2, 2, 2)),
    ("Mixed_5b", "mixed", None, None),
    ("Mixed_5c", "mixed", None, None),
)
BRANCHES = {"b0": (1, 1, 1), "b1a": (1, 1, 1), "b1b": (3, 3, 3), "b2a": (1, 1, 1), "b2b": (3, 3, 3), "b3b": (1, 1, 1)}


def same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[tuple[int, int]]:
    """TensorFlow "SAME" padding per dim as the PyTorch port computes it: (front, back), back gets the extra."""
    pads = []
    for n, k, s in zip(size, kernel, stride, strict=True):
        total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _pad(x, kernel, stride):
    return jnp.pad(x, [(0, 0), *same_padding(x.shape[1:4], kernel, stride), (0, 0)])


def max_pool_same(x: jax.Array, kernel, stride) -> jax.Array:
    """(B, T, H, W, C) zero-padded "SAME" max-pool."""
    return nnx.max_pool(_pad(x, kernel, stride), kernel, strides=stride, padding="VALID")


class Unit3D(nnx.Module):
    def __init__(self, cin: int, cout: int, kernel, stride=(1, 1, 1), *, logits: bool = False, rngs: nnx.Rngs):
        self.kernel, self.stride, self.logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nnx.Conv(cin, cout, self.kernel, strides=self.stride, padding="VALID", use_bias=logits, rngs=rngs)
        self.bn = None if logits else nnx.BatchNorm(cout, use_running_average=True, epsilon=1e-5, rngs=rngs)

    def __call__(self, x):
        x = self.conv3d(_pad(x, self.kernel, self.stride))
        return x if self.logits else jax.nn.relu(self.bn(x))


class InceptionModule(nnx.Module):
    def __init__(self, widths: dict, *, rngs: nnx.Rngs):
        self.units = nnx.Dict({b: Unit3D(*widths[b], k, rngs=rngs) for b, k in BRANCHES.items()})

    def __call__(self, x):
        u = self.units
        b3 = u["b3b"](max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return jnp.concatenate([u["b0"](x), u["b1b"](u["b1a"](x)), u["b2b"](u["b2a"](x)), b3], axis=-1)


class I3D(nnx.Module):
    def __init__(self, widths: dict[str, tuple[int, int]], *, rngs: nnx.Rngs | None = None):
        """widths: ``{"Conv3d_1a_7x7": (cin, cout), "Mixed_3b.b0": (cin, cout), ..., "logits": (cin, classes)}``."""
        rngs = rngs or nnx.Rngs(0)
        layers = {}
        for name, kind, kernel, stride in LAYERS:
            if kind == "unit":
                layers[name] = Unit3D(*widths[name], kernel, stride, rngs=rngs)
            elif kind == "mixed":
                layers[name] = InceptionModule({b: widths[f"{name}.{b}"] for b in BRANCHES}, rngs=rngs)
        self.layers = nnx.Dict(layers)
        self.logits = Unit3D(*widths["logits"], (1, 1, 1), logits=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, T, 224, 224, 3) in [-1, 1] -> (B, classes) logits averaged over time."""
        for name, kind, kernel, stride in LAYERS:
            x = max_pool_same(x, kernel, stride) if kind == "pool" else self.layers[name](x)
        x = nnx.avg_pool(x, (2, 7, 7), strides=(1, 1, 1), padding="VALID")
        return self.logits(x).mean(axis=(2, 3)).mean(axis=1)


def preprocess(videos: np.ndarray) -> jax.Array:
    """(B, T, H, W, 3) uint8 (or float 0..255) -> (B, T, 224, 224, 3) in [-1, 1] (cd-fvd's preprocess_i3d)."""
    v = jnp.asarray(videos, jnp.float32)
    b, t = v.shape[:2]
    frames = resize_bilinear(v.reshape(b * t, *v.shape[2:]), SIZE)
    return (2.0 * frames / 255.0 - 1.0).reshape(b, t, SIZE, SIZE, v.shape[-1])


_forward = nnx.jit(lambda m, x: m(x))


def i3d_features(model: I3D, videos: np.ndarray, batch: int = 4) -> np.ndarray:
    """(N, T, H, W, 3) uint8 clips (T >= 9 for the (2,7,7) average) -> (N, classes) logits."""
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise InputError(f"videos must be (N, T, H, W, 3), got shape {videos.shape}")
    if videos.dtype != np.uint8:
        videos = np.clip(np.round(np.asarray(videos, np.float32) * 255.0), 0, 255).astype(np.uint8)
    out = []
    for start in range(0, len(videos), batch):
        chunk = preprocess(videos[start : start + batch])
        n = chunk.shape[0]
        if n < batch:  # one batch shape: one compile
            chunk = jnp.concatenate([chunk, jnp.repeat(chunk[-1:], batch - n, 0)])
        out.append(np.asarray(_forward(model, chunk))[:n])
    return np.concatenate(out)


def _unit_names():
    for name, kind, _, _ in LAYERS:
        if kind == "unit":
            yield name
        elif kind == "mixed":
            yield from (f"{name}.{b}" for b in BRANCHES)
    yield "logits"


def load_i3d(path: str | os.PathLike | None) -> I3D:
    """The I3D of a local ``i3d_pretrained_400.pt`` (a torch.save state dict, any format), no torch."""
    path = require_file(path, "I3D weights i3d_pretrained_400.pt", FETCH_ADVICE)
    state = load_state_dict(path)
    widths = {}
    for n in _unit_names():
        key = f"{n}.conv3d.weight"
        if key not in state:
            raise InputError(f"{path}: {key!r} missing: not the PyTorch I3D state dict")
        widths[n] = (int(state[key].shape[1]), int(state[key].shape[0]))
    model = build_abstract(lambda: I3D(widths))
    for n in _unit_names():
        block, _, branch = n.partition(".")
        unit = model.logits if n == "logits" else (model.layers[block].units[branch] if branch else model.layers[n])
        set_conv(unit.conv3d, state, f"{n}.conv3d", path)
        if unit.bn is not None:
            set_batch_norm(unit.bn, state, f"{n}.bn", path)
    assert_filled(model, path)
    return model
