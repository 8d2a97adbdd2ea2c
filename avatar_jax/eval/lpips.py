"""LPIPS (Zhang et al. 2018, v0.1) in JAX, loaded from the public weight files without torch.

    images a, b (N,H,W,3) in [0,1] ──► 2x-1, ScalingLayer ──► backbone (AlexNet or VGG16 ``features``)
      ──► five ReLU taps, each unit-normalised over channels ──► (f_a - f_b)^2 ──► 1x1 "lin" conv (no bias)
      ──► spatial mean ──► sum over taps = distance (N,)

Two files, both in their upstream formats:

- the linear heads: ``alex.pth`` / ``vgg.pth`` shipped inside the ``lpips`` wheel (``lpips/weights/v0.1/``;
  keys ``lin{k}.model.1.weight``, shapes ``(1, C_k, 1, 1)``);
- the backbone: torchvision's ImageNet weights (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``; keys
  ``features.{i}.weight/bias``) or a whole saved ``LPIPS`` module (keys ``net.slice{k}.{i}.*``).
  One file holding both (a saved ``LPIPS`` state dict) may be given as ``lin_path`` alone.

Layer widths come from the weights, so the narrow random upstream network of the golden file loads
with the same code (``tests/golden/make_golden_eval.py``, parity with the ``lpips`` package).
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.errors import InputError
from avatar_jax.eval.torch_legacy import load_state_dict
from avatar_jax.eval.weights import require_file

SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)  # lpips.ScalingLayer
SCALE = np.array([0.458, 0.448, 0.450], np.float32)

# torchvision ``features`` as ops: ("conv", index, stride, padding), ("pool", kernel, stride), ("tap",) after a ReLU.
# Every conv is followed by a ReLU (index + 1); taps are where lpips' slices end (relu1..relu5).
ARCHS = {
    "alex": (("conv", 0, 4, 2), ("tap",), ("pool", 3, 2), ("conv", 3, 1, 2), ("tap",), ("pool", 3, 2),
             ("conv", 6, 1, 1), ("tap",), ("conv", 8, 1, 1), ("tap",), ("conv", 10, 1, 1), ("tap",)),
    "vgg": (("conv", 0, 1, 1), ("conv", 2, 1, 1), ("tap",), ("pool", 2, 2), ("conv", 5, 1, 1), ("conv", 7, 1, 1),
            ("tap",), ("pool", 2, 2), ("conv", 10, 1, 1), ("conv", 12, 1, 1), ("conv", 14, 1, 1), ("tap",),
            ("pool", 2, 2), ("conv", 17, 1, 1), ("conv", 19, 1, 1), ("conv", 21, 1, 1), ("tap",), ("pool", 2, 2),
            ("conv", 24, 1, 1), ("conv", 26, 1, 1), ("conv", 28, 1, 1), ("tap",)),
}
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LPIPS:
    """``convs``: per backbone conv ``(kernel (kh,kw,I,O), bias (O,))``; ``lins``: per tap ``(C_k,)``."""

    convs: tuple[tuple[jax.Array, jax.Array], ...]
    lins: tuple[jax.Array, ...]
    net: str = dataclasses.field(metadata=dict(static=True), default="alex")


def _backbone_key(key: str) -> str | None:
    """``features.{i}.x`` or lpips' ``net.slice{k}.{i}.x`` -> ``features.{i}.x``; None for other keys."""
    m = re.fullmatch(r"(?:features|net\.slice\d+)\.(\d+)\.(weight|bias)", key)
    return f"features.{m.group(1)}.{m.group(2)}" if m else None


def load_lpips(lin_path: str, backbone_path: str | None = None, *, net: str = "alex") -> LPIPS:
    """The LPIPS of ``net`` (``alex`` or ``vgg``) from its linear heads and backbone weight files."""
    if net not in ARCHS:
        raise InputError(f"LPIPS net must be one of {', '.join(ARCHS)}, got {net!r}")
    lin_path = require_file(lin_path, f"LPIPS linear weights ({net}.pth)",
                            f"take lpips/weights/v0.1/{net}.pth from the lpips wheel (pip download lpips==0.1.4)")
    lin_state = load_state_dict(lin_path)
    if backbone_path is None and not any(_backbone_key(k) for k in lin_state):
        raise InputError(f"{lin_path} holds only the LPIPS heads; also give the backbone weights "
                         f"(--lpips-backbone {BACKBONE_FILES[net]}, torchvision's ImageNet {net} weights)")
    if backbone_path is not None:
        backbone_path = require_file(backbone_path, f"LPIPS backbone weights ({BACKBONE_FILES[net]})",
                                     f"torchvision's ImageNet weights for {net} "
                                     f"(download.pytorch.org/models/{BACKBONE_FILES[net]})")
        source, state = backbone_path, load_state_dict(backbone_path)
    else:
        source, state = lin_path, lin_state
    features = {_backbone_key(k): np.asarray(v, np.float32) for k, v in state.items() if _backbone_key(k)}
    convs, lins, channels = [], [], 3
    for op in ARCHS[net]:
        if op[0] != "conv":
            continue
        w_key, b_key = f"features.{op[1]}.weight", f"features.{op[1]}.bias"
        if w_key not in features or b_key not in features:
            raise InputError(f"{source}: backbone tensor {w_key!r} is missing (not torchvision's {net} layout?)")
        w = features[w_key]
        if w.ndim != 4 or w.shape[1] != channels:
            raise InputError(f"{source}: {w_key} has shape {w.shape}, expected (O, {channels}, kh, kw)")
        convs.append((jnp.asarray(np.transpose(w, (2, 3, 1, 0))), jnp.asarray(features[b_key])))
        channels = w.shape[0]
    taps = _tap_channels(net, convs)
    for k, c in enumerate(taps):
        key = f"lin{k}.model.1.weight"
        if key not in lin_state:
            raise InputError(f"{lin_path}: tensor {key!r} is missing (not an lpips v0.1 weight file?)")
        w = np.asarray(lin_state[key], np.float32)
        if w.shape != (1, c, 1, 1):
            raise InputError(f"{lin_path}: {key} has shape {w.shape}, the backbone gives {c} channels there")
        lins.append(jnp.asarray(w.reshape(c)))
    return LPIPS(tuple(convs), tuple(lins), net)


def _tap_channels(net: str, convs) -> list[int]:
    out, c, i = [], 3, 0
    for op in ARCHS[net]:
        if op[0] == "conv":
            c = int(convs[i][0].shape[-1])
            i += 1
        elif op[0] == "tap":
            out.append(c)
    return out


def features(model: LPIPS, x: jax.Array) -> list[jax.Array]:
    """``x (N,H,W,3)`` in [-1,1] -> the five ReLU taps ``(N,h,w,C_k)`` of the backbone (after ScalingLayer)."""
    h = (x - SHIFT) / SCALE
    taps, i = [], 0
    for op in ARCHS[model.net]:
        if op[0] == "conv":
            kernel, bias = model.convs[i]
            i += 1
            p = op[3]
            h = jax.lax.conv_general_dilated(h, kernel, (op[2], op[2]), ((p, p), (p, p)),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                             precision=jax.lax.Precision.HIGHEST)
            h = jax.nn.relu(h + bias)
        elif op[0] == "pool":  # torch MaxPool2d: no padding, floor
            h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, op[1], op[1], 1), (1, op[2], op[2], 1), "VALID")
        else:
            taps.append(h)
    return taps


@jax.jit
def _distance(model: LPIPS, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    per_layer = []
    for fa, fb, lin in zip(features(model, a), features(model, b), model.lins, strict=True):
        na = fa / (jnp.sqrt(jnp.sum(fa**2, -1, keepdims=True)) + 1e-10)  # lpips.normalize_tensor
        nb = fb / (jnp.sqrt(jnp.sum(fb**2, -1, keepdims=True)) + 1e-10)
        per_layer.append(jnp.mean(((na - nb) ** 2) @ lin, axis=(1, 2)))
    per_layer = jnp.stack(per_layer)  # (L, N)
    return jnp.sum(per_layer, 0), per_layer


def _unit(frames) -> jax.Array:
    x = np.asarray(frames)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise InputError(f"LPIPS takes frames (N,H,W,3), got {x.shape}")
    return jnp.asarray(x)


def lpips(model: LPIPS, a, b, *, per_layer: bool = False, batch: int = 16):
    """LPIPS distance per frame ``(N,)`` of ``a``, ``b`` ``(N,H,W,3)`` (uint8, or float in [0,1]); lower is
    closer. ``per_layer``: also the ``(5, N)`` contributions. Frames go through in chunks of ``batch``."""
    a, b = _unit(a), _unit(b)
    if a.shape != b.shape:
        raise InputError(f"LPIPS compares frames of one shape, got {a.shape} and {b.shape}")
    if min(a.shape[1:3]) < 32:
        raise InputError(f"LPIPS needs frames of at least 32x32 pixels (the backbone's strides), got {a.shape[1:3]}")
    totals, layers = [], []
    for s in range(0, a.shape[0], batch):
        d, pl = _distance(model, 2.0 * a[s:s + batch] - 1.0, 2.0 * b[s:s + batch] - 1.0)
        totals.append(np.asarray(d))
        layers.append(np.asarray(pl))
    total = np.concatenate(totals)
    return (total, np.concatenate(layers, axis=1)) if per_layer else total
