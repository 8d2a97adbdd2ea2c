"""``export_bundle``: a trained avatar model -> a self-contained inference bundle folder.

The bundle (layout in :mod:`avatar_jax.export.layout`) holds the parameters (safetensors), the
canonical avatar (``avatar.npz`` with its particle bindings, ``avatar.ply`` for viewers), the config,
and the pipeline's three stages serialised with ``jax.export`` for cpu, cuda and tpu with a symbolic
frame count (:mod:`avatar_jax.export.functions`). :func:`avatar_jax.export.loader.load_bundle` reads
it back without training code. The folder is built under a temporary name beside ``out`` and moved
into place when complete, so a failed export leaves nothing (or the previous bundle) behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avatar_jax.errors import InputError
from avatar_jax.export import functions, layout
from avatar_jax.export.loader import avatar_npz_entries
from avatar_jax.geometry import Camera, intrinsics
from avatar_jax.geometry.camera import look_at_viewmat
from avatar_jax.inference.ply_frames import write_gaussians_ply
from avatar_jax.model.canonical import CanonicalAvatar
from avatar_jax.render import intersection_count

DEFAULT_RESOLUTIONS = ((256, 256), (512, 512))
CAPACITY_STEP = 1024


def front_camera(avatar: CanonicalAvatar, fov_y_deg: float, margin: float = 1.15) -> dict:
    """A frontal view (camera on the -z side, the subject facing it) framing the whole avatar."""
    means = np.asarray(avatar.means, np.float64)
    lo, hi = means.min(0), means.max(0)
    centre = 0.5 * (lo + hi)
    extent = max(hi[1] - lo[1], hi[0] - lo[0]) * margin
    dist = 0.5 * extent / math.tan(math.radians(fov_y_deg) / 2) + 0.5 * (hi[2] - lo[2])
    return dict(eye=(centre - np.array([0.0, 0.0, dist])).tolist(), target=centre.tolist(), up=[0.0, 1.0, 0.0],
                fov_y_deg=float(fov_y_deg))


def render_capacity(avatar: CanonicalAvatar, camera: dict, width: int, height: int, factor: float) -> int:
    """Intersection slots per frame: ``factor`` x the rest pose's largest count over the front view and 8
    views around it (motion and residual scales grow footprints), rounded up to a multiple of 1024."""
    ri = avatar.render_inputs()
    eye, target = np.asarray(camera["eye"]), np.asarray(camera["target"])
    radius = float(np.linalg.norm(eye - target))
    K = jnp.asarray(intrinsics(width, height, camera["fov_y_deg"]))
    worst = 1
    for k in range(9):
        az = 2 * math.pi * k / 8
        e = eye if k == 8 else target + radius * np.array([math.sin(az), 0.0, -math.cos(az)])
        cam = Camera(jnp.asarray(look_at_viewmat(e, target, camera["up"])), K, width, height)
        worst = max(worst, intersection_count(ri["means"], ri["quats"], ri["scales"], cam))
    # Fixed once at export (no recompiles to avoid), so round up to a multiple of 1024, not a power of
    # two: sorting and compositing cost follows the slots.
    return -(-int(math.ceil(factor * worst)) // CAPACITY_STEP) * CAPACITY_STEP


def _plain_config(config) -> dict:
    if hasattr(config, "to_json"):
        return json.loads(config.to_json())
    return json.loads(json.dumps(config))


def export_bundle(out: str, *, config, graphdef: nnx.GraphDef, params, avatar: CanonicalAvatar,
                  resolutions: Sequence[tuple[int, int]] = DEFAULT_RESOLUTIONS,
                  platforms: Sequence[str] = layout.PLATFORMS, camera: dict | None = None,
                  capacity_factor: float = 4.0, background=None, source: str = "",
                  progress: Callable[[str], None] | None = None) -> str:
    """Write the bundle for the model ``(graphdef, params)`` of a :class:`TalkingAvatar` and ``avatar`` to ``out``.

    ``params``: the ``nnx.Param`` state (a train state's ``params``). ``resolutions``: the ``(W, H)``
    the bundle can render (each is one exported renderer). ``camera``: the front view as
    ``dict(eye, target, up, fov_y_deg)`` (default: :func:`front_camera`). Returns ``out``.
    """
    say = progress or (lambda _msg: None)
    sample_rate, fps = int(config.audio.sample_rate), float(config.audio.fps)
    spf = sample_rate / fps
    if spf != int(spf):
        raise InputError(f"export needs a whole number of audio samples per frame; {sample_rate} Hz at {fps} fps "
                         f"gives {spf:.3f}")
    resolutions = [(int(w), int(h)) for w, h in resolutions]
    for w, h in resolutions:
        if w < 2 or h < 2 or w % 2 or h % 2:
            raise InputError(f"bundle resolutions must be even sizes >= 2 (H.264), got {w}x{h}")
    unknown = [p for p in platforms if p not in layout.PLATFORMS]
    if unknown or not platforms:
        raise InputError(f"export platforms must be among {', '.join(layout.PLATFORMS)}, got {list(platforms)}")
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.exists(os.path.join(out, layout.MANIFEST)):
        raise InputError(f"{out!r} exists and is not a bundle; choose a new output path")
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=".bundle-")
    except OSError as e:
        raise InputError(f"cannot write the bundle to {out!r}: {e.strerror}") from None
    try:
        avatar.check()
        camera = camera or front_camera(avatar, float(config.render.fov_y_deg))
        background = list(config.render.background if background is None else background)
        flat, treedef, names = functions.flatten_params(params)
        flat = {k: jnp.asarray(v, jnp.float32) if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating) else v
                for k, v in flat.items()}
        model = nnx.merge(graphdef, params)
        carry = functions.carry_to_dict(model.motion.init_carry(avatar))
        av = functions.avatar_to_dict(avatar)

        # Parameters, avatar, config.
        from safetensors.numpy import save_file

        save_file({k: np.asarray(v) for k, v in flat.items()}, os.path.join(tmp, layout.PARAMS))
        np.savez(os.path.join(tmp, layout.AVATAR_NPZ), **avatar_npz_entries(av, carry))
        write_gaussians_ply(os.path.join(tmp, layout.AVATAR_PLY), **avatar.render_inputs())
        with open(os.path.join(tmp, layout.CONFIG), "w") as f:
            json.dump(_plain_config(config), f, indent=1, sort_keys=True)

        # The exported stages.
        encode, motion = functions.make_stages(graphdef, treedef, names, functions.avatar_statics(avatar), sample_rate,
                                               fps)
        t = functions.symbolic_frames()
        d = int(model.motion.d_model)
        n = avatar.num_gaussians
        f32 = jnp.float32
        gauss = dict(means=(t, n, 3), quats=(t, n, 4), scales=(t, n, 3), opacities=(t, n),
                     colors=(t,) + tuple(avatar.colors.shape))
        gauss = {k: jax.ShapeDtypeStruct(v, f32) for k, v in gauss.items()}
        caps = {(w, h): render_capacity(avatar, camera, w, h, capacity_factor) for w, h in resolutions}
        os.makedirs(os.path.join(tmp, layout.FUNCTIONS))
        for platform in platforms:
            jobs = [("encode", encode, (functions.abstract(flat), jax.ShapeDtypeStruct((int(spf) * t,), f32))),
                    ("motion", motion, (functions.abstract(flat), functions.abstract(av), functions.abstract(carry),
                                        jax.ShapeDtypeStruct((t, d), f32)))]
            for (w, h), cap in caps.items():
                jobs.append((layout.frames_name(w, h), functions.make_frames(w, h, cap, platform),
                             (gauss, jax.ShapeDtypeStruct((t, 4, 4), f32), jax.ShapeDtypeStruct((t, 3, 3), f32),
                              jax.ShapeDtypeStruct((3,), f32))))
            for name, fn, args in jobs:
                say(f"export {name} for {platform}")
                exported = functions.export_for(fn, platform, *args)
                with open(os.path.join(tmp, layout.function_file(name, platform)), "wb") as f:
                    f.write(exported.serialize())

        manifest = dict(
            format=layout.FORMAT, version=layout.VERSION, source=source, sample_rate=sample_rate, fps=fps,
            samples_per_frame=int(spf), d_model=d, num_gaussians=n, num_particles=avatar.num_particles,
            platforms=list(platforms), camera=camera, background=[float(x) for x in background],
            resolutions=[dict(width=w, height=h, capacity=caps[(w, h)]) for w, h in resolutions],
            jax_version=jax.__version__,
        )
        with open(os.path.join(tmp, layout.MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _move_into_place(tmp: str, out: str) -> None:
    """Replace ``out`` (absent, or an older bundle) with the finished folder ``tmp``."""
    if not os.path.exists(out):
        os.replace(tmp, out)
        return
    old = tmp + ".old"
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
