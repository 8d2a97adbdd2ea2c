"""``load_bundle(path) -> Bundle``: an exported avatar, runnable without training code or flax.

Only numpy, jax, safetensors and the bundle's own files are needed: the three stages of the
pipeline (see :mod:`avatar_jax.export.functions`) are deserialised ``jax.export`` functions for
this machine's platform (cpu, cuda or tpu), called with the stored parameters and avatar.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from avatar_jax.errors import InputError
from avatar_jax.export import layout

_AVATAR_PREFIX = "avatar_"
_CARRY_PREFIX = "carry_"


def current_platform() -> str:
    """The bundle platform name of jax's default backend (``gpu`` -> ``cuda``)."""
    backend = jax.default_backend()
    return {"gpu": "cuda"}.get(backend, backend)


@dataclasses.dataclass
class Bundle:
    """A loaded bundle. ``encode``, ``motion`` and ``frames`` run its exported stages on this platform."""

    path: str
    manifest: dict
    config: dict
    params: dict[str, jax.Array]
    avatar: dict[str, jax.Array]
    initial_carry: dict[str, jax.Array]
    platform: str

    # -- facts from the manifest ------------------------------------------------------------------
    @property
    def fps(self) -> float:
        return float(self.manifest["fps"])

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["sample_rate"])

    @property
    def samples_per_frame(self) -> int:
        return int(self.manifest["samples_per_frame"])

    @property
    def resolutions(self) -> list[tuple[int, int]]:
        return [(int(r["width"]), int(r["height"])) for r in self.manifest["resolutions"]]

    @property
    def num_gaussians(self) -> int:
        return int(self.avatar["means"].shape[0])

    @property
    def background(self) -> np.ndarray:
        return np.asarray(self.manifest["background"], np.float32)

    # -- exported functions -----------------------------------------------------------------------
    def exported(self, name: str) -> export.Exported:
        """The deserialised function ``name`` (encode, motion, frames_WxH) for this bundle's platform."""
        path = os.path.join(self.path, layout.function_file(name, self.platform))
        if not os.path.exists(path):
            raise InputError(f"bundle {self.path!r} has no {name!r} function for platform {self.platform!r}")
        st = os.stat(path)
        return _deserialize(path, st.st_size, st.st_mtime_ns)

    def encode(self, audio: np.ndarray) -> jax.Array:
        """``audio (T*spf,)`` float32 at the bundle's sample rate -> driving tokens ``(T, d)``."""
        audio = jnp.asarray(audio, jnp.float32)
        if audio.ndim != 1 or audio.shape[0] == 0 or audio.shape[0] % self.samples_per_frame:
            raise InputError(f"encode takes (T*{self.samples_per_frame},) samples, got {audio.shape}")
        return self.exported("encode").call(self.params, audio)

    def motion(self, carry: dict, driving: jax.Array) -> tuple[dict, dict]:
        """Driving tokens ``(T, d)`` -> per-frame Gaussians ``{means (T,N,3), ...}`` and the next carry."""
        return self.exported("motion").call(self.params, self.avatar, carry, jnp.asarray(driving, jnp.float32))

    def frames(self, gaussians: dict, viewmats, Ks, resolution: tuple[int, int], background=None
               ) -> tuple[jax.Array, jax.Array]:
        """Gaussians ``(T,N,...)`` seen by cameras ``viewmats (T,4,4)``, ``Ks (T,3,3)`` -> ``rgb (T,H,W,3)``
        in [0,1] and ``overflow (T,)`` (True where the render capacity was too small; that image is NaN)."""
        w, h = resolution
        if (w, h) not in self.resolutions:
            raise InputError(f"bundle {self.path!r} renders {self.resolution_list()}, not {w}x{h}; "
                             "export it again with that resolution")
        bg = self.background if background is None else np.asarray(background, np.float32)
        return self.exported(layout.frames_name(w, h)).call(
            gaussians, jnp.asarray(viewmats, jnp.float32), jnp.asarray(Ks, jnp.float32), jnp.asarray(bg))

    def resolution_list(self) -> str:
        return ", ".join(f"{w}x{h}" for w, h in self.resolutions)

    @cached_property
    def front(self) -> dict:
        """The front view: ``eye (3,)``, ``target (3,)``, ``up (3,)``, ``fov_y_deg``."""
        cam = self.manifest["camera"]
        return dict(eye=np.asarray(cam["eye"], np.float64), target=np.asarray(cam["target"], np.float64),
                    up=np.asarray(cam["up"], np.float64), fov_y_deg=float(cam["fov_y_deg"]))


@functools.lru_cache(maxsize=32)
def _deserialize(path: str, size: int, mtime_ns: int) -> export.Exported:
    """One deserialised function per file version: reloading a bundle reuses its compiled executables."""
    del size, mtime_ns  # cache key only
    with open(path, "rb") as f:
        try:
            return export.deserialize(bytearray(f.read()))
        except Exception as e:  # noqa: BLE001  (any decoding failure means a damaged file)
            raise InputError(f"{path!r} is a damaged exported function ({type(e).__name__})") from None


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{what} {path!r} is unreadable ({type(e).__name__})") from None


def load_bundle(path: str, platform: str | None = None) -> Bundle:
    """Read the bundle folder ``path`` for ``platform`` (default: this machine's)."""
    if not os.path.exists(path):
        raise InputError(f"no such bundle: {path}")
    manifest_path = os.path.join(path, layout.MANIFEST)
    if not os.path.isdir(path) or not os.path.exists(manifest_path):
        raise InputError(f"{path!r} is not an avatar-jax bundle (no {layout.MANIFEST}); make one with "
                         "'avatar-jax export'")
    manifest = _read_json(manifest_path, "bundle manifest")
    if manifest.get("format") != layout.FORMAT:
        raise InputError(f"{path!r} is not an avatar-jax bundle (format {manifest.get('format')!r})")
    if int(manifest.get("version", -1)) != layout.VERSION:
        raise InputError(f"bundle {path!r} has format version {manifest.get('version')}, this avatar-jax reads "
                         f"version {layout.VERSION}; export it again")
    platform = platform or current_platform()
    if platform not in manifest.get("platforms", []):
        raise InputError(f"bundle {path!r} was exported for {manifest.get('platforms')}, not {platform!r}")
    config = _read_json(os.path.join(path, layout.CONFIG), "bundle config")

    from safetensors.numpy import load_file

    params_path = os.path.join(path, layout.PARAMS)
    try:
        params = {k: jnp.asarray(v) for k, v in load_file(params_path).items()}
    except Exception as e:  # noqa: BLE001  (missing, truncated or foreign file)
        raise InputError(f"bundle {path!r}: unreadable {layout.PARAMS} ({type(e).__name__}: {e})") from None
    try:
        with np.load(os.path.join(path, layout.AVATAR_NPZ)) as z:
            avatar = {k[len(_AVATAR_PREFIX):]: jnp.asarray(z[k]) for k in z.files if k.startswith(_AVATAR_PREFIX)}
            carry = {k[len(_CARRY_PREFIX):]: jnp.asarray(z[k]) for k in z.files if k.startswith(_CARRY_PREFIX)}
    except (OSError, ValueError) as e:
        raise InputError(f"bundle {path!r}: unreadable {layout.AVATAR_NPZ} ({e})") from None
    if "means" not in avatar or not carry:
        raise InputError(f"bundle {path!r}: {layout.AVATAR_NPZ} lacks the avatar or its initial carry")
    return Bundle(path=os.path.abspath(path), manifest=manifest, config=config, params=params, avatar=avatar,
                  initial_carry=carry, platform=platform)


def avatar_npz_entries(avatar: dict, carry: dict) -> dict[str, np.ndarray]:
    """The arrays :func:`load_bundle` expects in ``avatar.npz`` (the writer uses this too)."""
    out = {_AVATAR_PREFIX + k: np.asarray(v) for k, v in avatar.items()}
    out.update({_CARRY_PREFIX + k: np.asarray(v) for k, v in carry.items()})
    return out
