"""The three stages of audio -> Gaussians -> frames as pure functions of plain arrays, for ``jax.export``.

An exported function's inputs and outputs must be pytrees a fresh process can rebuild without our
classes (no ``nnx.State``, no ``CanonicalAvatar``): parameters travel as a flat ``{name: array}``
dict (the names of the bundle's safetensors file), the avatar and the carry as dicts. Every stage
has a symbolic frame count ``T``:

* ``encode(params, audio (T*spf,)) -> driving (T, d)``: audio encoder + gated fusion, ``spf`` =
  samples per frame (640 at 16 kHz and 25 fps). Equals :class:`~avatar_jax.model.driving.DrivingEncoder`
  on the same samples; the frame-rate resampling weights are computed with ``jnp`` here because
  the numpy ones of :func:`~avatar_jax.audio.features.frame_rate_weights` need a concrete length.
* ``motion(params, avatar, carry, driving (T,d)) -> (gaussians (T,N,...), carry)``: the audio-driven
  avatar; the carry crosses chunk boundaries, so chunks equal one pass.
* ``frames(gaussians (T,N,...), viewmats (T,4,4), Ks (T,3,3), background (3,)) -> (rgb (T,H,W,3),
  overflow (T,))``: one camera per frame, at a resolution and intersection capacity fixed at export.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import export
from jax.sharding import AbstractDevice, AbstractMesh

from avatar_jax.errors import InputError
from avatar_jax.geometry import Camera
from avatar_jax.model.avatar import Carry
from avatar_jax.model.canonical import CanonicalAvatar
from avatar_jax.render import render

GAUSSIAN_KEYS = ("means", "quats", "scales", "opacities", "colors")
# platform -> renderer settings (xla on CPU, the Pallas kernels on accelerators)
# On the CPU the inference render runs forward only (skips chunks behind opaque tiles) and picks, per frame,
# the smallest of up to 8 capacity levels (down to 1/5 of the capacity) that holds its intersections: the
# exported capacity is sized for the worst pose, a talking frame of the bench's avatar needs ~1/4 of it.
# The Pallas exports keep one level.
RENDER_SETTINGS = {
    "cpu": dict(backend="xla", forward_only=True, capacity_levels=8),
    "cuda": dict(backend="pallas", pallas_platform="gpu", interpret=False),
    "tpu": dict(backend="pallas", pallas_platform="tpu", interpret=False),
}
TRITON = "__gpu$xla.gpu.triton"
# jax 0.12: a CUDA export needs a GPU named for it (DESIGN.md); any CUDA GPU runs the result.
_CUDA_DEVICE = AbstractDevice("NVIDIA H100 80GB HBM3", None, "cuda")


# ---------------------------------------------------------------------------------------------- pytrees

def _key_name(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    raise TypeError(f"unexpected pytree path entry {entry!r}")


def flatten_params(params) -> tuple[dict[str, jax.Array], jax.tree_util.PyTreeDef, list[str]]:
    """``nnx.State`` -> ``({"driving/encoder/conv1/kernel": array, ...}, treedef, names in leaf order)``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = []
    for path, _ in leaves:
        parts = [_key_name(e) for e in path]
        if parts and parts[-1] == "value":  # the nnx.Variable's payload
            parts = parts[:-1]
        names.append("/".join(parts))
    if len(set(names)) != len(names):
        raise ValueError("parameter names collide after flattening")
    return {n: leaf for n, (_, leaf) in zip(names, leaves, strict=True)}, treedef, names


def avatar_to_dict(avatar: CanonicalAvatar) -> dict[str, jax.Array]:
    """The avatar's array fields that are set (optional ones may be None); static fields stay behind."""
    return {f.name: getattr(avatar, f.name) for f in dataclasses.fields(avatar)
            if not f.metadata.get("static") and getattr(avatar, f.name) is not None}


def avatar_statics(avatar: CanonicalAvatar) -> dict:
    """The avatar's static (Python) fields, baked into the exported functions."""
    return {f.name: getattr(avatar, f.name) for f in dataclasses.fields(avatar) if f.metadata.get("static")}


def carry_to_dict(carry: Carry) -> dict[str, jax.Array]:
    """Every field of the model's carry (whatever it holds), as arrays."""
    return {f.name: jnp.asarray(getattr(carry, f.name)) for f in dataclasses.fields(carry)}


# ---------------------------------------------------------------------------------------------- stages

def frame_weights(num_features, feature_rate: float, fps: float, num_frames, offset_s: float = 0.0):
    """Traced twin of :func:`avatar_jax.audio.features.frame_rate_weights` (symbolic sizes allowed).

    Returns ``idx (T,K) int32`` and ``w (T,K) float32``: frame ``t`` is the time-weighted average of
    the feature boxes overlapping ``[t/fps, (t+1)/fps)``, clipped to the features' span.
    """
    f = jnp.asarray(num_features, jnp.float32)
    t = jnp.arange(num_frames, dtype=jnp.float32)
    # t * (rate/fps) - offset*rate: both constants are exact in float32 for the usual rates (50/25 = 2,
    # 0.01*50 = 0.5), so the float32 weights equal the float64 numpy ones (t/fps would round).
    ratio, shift = float(feature_rate) / float(fps), float(offset_s) * float(feature_rate)
    a = jnp.clip(t * ratio - shift, 0.0, f)
    b = jnp.clip((t + 1) * ratio - shift, 0.0, f)
    k_max = int(math.ceil(feature_rate / fps)) + 2
    first = jnp.floor(a).astype(jnp.int32)
    idx = first[:, None] + jnp.arange(k_max, dtype=jnp.int32)[None, :]
    lo = jnp.maximum(a[:, None], idx.astype(jnp.float32))
    hi = jnp.minimum(b[:, None], idx.astype(jnp.float32) + 1.0)
    overlap = jnp.maximum(0.0, hi - lo)
    total = overlap.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 1e-6
    w = jnp.where(empty[:, None], 0.0, overlap / jnp.where(total > 0, total, 1.0))
    edge = jnp.where(a <= 0.0, 0, jnp.asarray(num_features, jnp.int32) - 1)
    idx = idx.at[:, 0].set(jnp.where(empty, edge, idx[:, 0]))
    w = w.at[:, 0].set(jnp.where(empty, 1.0, w[:, 0]))
    idx = jnp.clip(idx, 0, jnp.asarray(num_features, jnp.int32) - 1)
    return idx, w


def make_stages(graphdef: nnx.GraphDef, treedef, names: list[str], avatar_static: dict, sample_rate: int,
                fps: float):
    """``(encode, motion)`` closures over the static structure (see the module docstring)."""

    def model(params: dict):
        state = jax.tree_util.tree_unflatten(treedef, [params[n] for n in names])
        return nnx.merge(graphdef, state)

    def encode(params: dict, audio: jax.Array) -> jax.Array:
        m = model(params)
        enc = m.driving.encoder
        feats = enc(audio.astype(jnp.float32))  # (F, dim) at the encoder's rate
        num_frames = audio.shape[0] // round(sample_rate / fps)
        idx, w = frame_weights(feats.shape[0], enc.feature_rate, fps, num_frames,
                               float(getattr(enc, "feature_offset_s", 0.0)))
        frames = jnp.einsum("tkd,tk->td", feats[idx], w.astype(feats.dtype))
        return m.driving.fusion(frames).astype(jnp.float32)

    def motion(params: dict, avatar: dict, carry: dict, driving: jax.Array):
        m = model(params)
        av = CanonicalAvatar(**avatar, **avatar_static)
        out, new = m.motion(av, driving, Carry(**carry))
        gauss = {k: getattr(out, k).astype(jnp.float32) for k in GAUSSIAN_KEYS}
        return gauss, carry_to_dict(new)

    return encode, motion


def make_frames(width: int, height: int, capacity: int, platform: str):
    """``frames(gaussians, viewmats, Ks, background)`` rendering each frame with its own camera."""
    settings = RENDER_SETTINGS[platform]

    def frames(gauss: dict, viewmats: jax.Array, Ks: jax.Array, background: jax.Array):
        def one(args):
            g, v, k = args
            out = render(*(g[name] for name in GAUSSIAN_KEYS), Camera(v, k, width, height), background=background,
                         capacity=capacity, check_finite=False, **settings)
            return out.rgb, out.overflow

        # lax.map, not vmap: one frame's temporaries at a time, and the Pallas grids stay static
        # (Triton has no dynamic grid bounds; vmap over a symbolic T would add one).
        return jax.lax.map(one, (gauss, viewmats, Ks))

    return frames


# ---------------------------------------------------------------------------------------------- export

def symbolic_frames(name: str = "T"):
    """A symbolic frame count for input shapes (``T >= 1``)."""
    return export.symbolic_shape(name, constraints=(f"{name} >= 1",))[0]


def export_for(fn, platform: str, *args) -> export.Exported:
    """``jax.export`` of ``fn`` for one platform from abstract ``args`` (ShapeDtypeStructs)."""
    if platform not in RENDER_SETTINGS:
        raise InputError(f"unknown export platform {platform!r}; choose from {', '.join(RENDER_SETTINGS)}")
    # Full float32 matrix products on every platform: a bundle must compute the same motion wherever it
    # runs. With a GPU's default (TF32) the closed-loop motion of one bundle drifted metres away from its
    # cpu run within 30 frames (H200, test weights pushed off their initialisation).
    with jax.default_matmul_precision("highest"):
        if platform != "cuda":
            return export.export(jax.jit(fn), platforms=[platform])(*args)
        return export_with_abstract_device(fn, "cuda", _CUDA_DEVICE, *args,
                                           disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON)])


def export_with_abstract_device(fn, platform: str, device: AbstractDevice, *args, disabled_checks=()):
    """Export for a device this machine does not have (the Triton lowering reads the GPU's kind from it).

    The device rides on an abstract mesh with *no axes*: a one-device mesh ``("x",)`` (DESIGN.md's lowering
    recipe) also lowers, but puts sharding constraints on the dimension arithmetic of the symbolic frame
    count, so the shape refinement of every later call fails ("expects static assert_what"): such a
    bundle deserialises but never runs (seen on an H200, jax 0.11.2; the same on CPU with jax 0.12).
    """
    with jax.sharding.use_abstract_mesh(AbstractMesh((), (), abstract_device=device)):
        return export.export(jax.jit(fn), platforms=[platform], disabled_checks=list(disabled_checks))(*args)


def abstract(tree):
    """Arrays -> ShapeDtypeStructs (no sharding: the bundle runs on one device)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype), tree)
