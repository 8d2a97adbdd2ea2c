"""Synthetic talking clips, offline: corpus sentence -> eSpeak voice -> rig motion -> our renderer -> records.

The offline stand-in for the paper's video-diffusion clips (appendix C). A sentence of the
conversational corpus is spoken by :mod:`avatar_jax.audio.tts` in one of several voices; its phoneme
timings and loudness drive the rig (:mod:`avatar_jax.data.motion`, :mod:`avatar_jax.data.rig`); the posed
Gaussians are rendered with :func:`avatar_jax.render.render`; keypoints are the rig's points projected
with the same camera (exact, confidence 1 where defined and in view); the mask is the rendered alpha.
The controls are stored in ``ClipMeta.extra["controls"]`` so the audio-motion relation is known, and
the rigged figure itself (with its landmark rest points) in ``avatars/<subject>.npz``: the canonical
avatar a training run on these clips deforms (:mod:`avatar_jax.train.avatar`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax.numpy as jnp
import numpy as np

from avatar_jax.data import corpus, index, motion, records, rig, schema
from avatar_jax.errors import InputError
from avatar_jax.geometry import Camera, look_at


@dataclasses.dataclass(frozen=True)
class SyntheticOptions:
    size: int = 96
    num_gaussians: int = 3000
    voices: tuple[str, ...] = ("en-us", "en-us+f3", "en+m3", "en-gb-scotland")
    sentences: int = 8
    framing: str = "upper_body"
    subjects: int = 1
    fps: float = 25.0
    fov_y_deg: float = 30.0

    @classmethod
    def from_config(cls, data) -> SyntheticOptions:
        syn = data.synthetic
        return cls(size=int(syn.size), num_gaussians=int(syn.num_gaussians), voices=tuple(syn.voices),
                   sentences=int(syn.sentences), framing=str(syn.framing), subjects=int(syn.subjects),
                   fps=float(data.fps))


def figure_from_avatar(avatar: str, num_gaussians: int = 3000, seed: int = 0) -> rig.Figure:
    """``"synthetic"``: the built-in figure (skin tone and clothes varied by ``seed``); otherwise a folder
    written by ``avatar-jax reconstruct`` holding ``avatar.npz`` (or the path of such a file)."""
    if avatar == "synthetic":
        from avatar_jax.model.canonical import synthetic_avatar

        av = synthetic_avatar(num_gaussians, 64, seed=seed)
        ri = {k: np.asarray(v) for k, v in av.render_inputs().items()}
        part = np.asarray(av.part)
        rng = np.random.default_rng(seed + 1000)
        skin = np.array([0.85, 0.65, 0.55]) * rng.uniform(0.55, 1.05)
        shirt = rng.uniform(0.1, 0.8, 3)
        base = np.where(part[:, None] == 0, shirt, skin)
        colors = np.clip(base + 0.04 * rng.standard_normal(base.shape), 0, 1)
        return rig.Figure(ri["means"], ri["quats"], ri["scales"], ri["opacities"], colors.astype(np.float32), part)
    path = os.path.join(avatar, "avatar.npz") if os.path.isdir(avatar) else avatar
    if not os.path.exists(path):
        raise InputError(f"--avatar {avatar!r}: expected 'synthetic' or a reconstructed avatar folder with avatar.npz")
    from avatar_jax.body.parts import coarse
    from avatar_jax.gaussians.avatar_file import load_avatar
    from avatar_jax.gaussians.cloud import rgb_from_dc

    cloud, _ = load_avatar(path)
    args = {k: np.asarray(v) for k, v in cloud.render_args().items()}
    rgb = np.clip(np.asarray(rgb_from_dc(cloud.sh[:, 0])), 0, 1)
    return rig.Figure(args["means"], args["quats"], args["scales"], args["opacities"], rgb.astype(np.float32),
                      coarse(np.asarray(cloud.part)).astype(np.int32))


def frame_camera(r: rig.Rig, size: int, framing: str, fov_y_deg: float = 30.0) -> Camera:
    """A frontal camera (on the -z side) framing the face or the upper body with the hands."""
    c, rad = r.head_centre, r.head_radii
    if framing == "face":
        target, extent = c - np.array([0, 0.15 * rad[1], 0]), 3.2 * rad[1]
    elif framing == "upper_body":
        hands = r.figure.means[r.figure.part == 2]
        low = float(np.percentile(hands[:, 1], 2)) if hands.size else c[1] - 6 * rad[1]
        top = c[1] + rad[1]
        target, extent = np.array([c[0], 0.5 * (low + top), c[2]]), 1.25 * (top - low)
    else:
        raise InputError(f"framing must be 'face' or 'upper_body', got {framing!r}")
    dist = 0.5 * extent / np.tan(np.radians(fov_y_deg) / 2) + rad[2]
    return look_at(target - np.array([0, 0, dist]), target, width=size, height=size, fov_y_deg=fov_y_deg)


def render_capacity(r: rig.Rig, camera: Camera) -> int:
    """Intersection slots for rendering ``r``: a power of two >= 2x the rest pose's count. Reusing one value
    for every clip of a rig keeps the renderer from recompiling (it retries eagerly if ever exceeded)."""
    from avatar_jax.render import intersection_count

    fig = r.figure
    hits = int(intersection_count(jnp.asarray(fig.means), jnp.asarray(fig.quats), jnp.asarray(fig.scales), camera))
    return 1 << (2 * max(hits, 1) - 1).bit_length()


def render_frames(r: rig.Rig, controls: motion.Controls, camera: Camera, background=(0.92, 0.92, 0.9),
                  capacity: int | None = None) -> tuple[np.ndarray, np.ndarray, object]:
    """``frames (T,H,W,3) uint8``, ``alpha (T,H,W) uint8`` and the bone transforms ``(T,6,4,4)``."""
    from avatar_jax.render import render

    transforms = rig.bone_transforms(r, controls)
    means, quats = rig.pose(r, transforms)
    fig = r.figure
    scales, opac, colors = (jnp.asarray(a) for a in (fig.scales, fig.opacities, fig.colors))
    capacity = capacity or render_capacity(r, camera)
    frames, alphas = [], []
    for t in range(controls.num_frames):
        out = render(means[t], quats[t], scales, opac, colors, camera, background=background, backend="auto",
                     capacity=capacity)
        frames.append(np.clip(np.asarray(out.rgb) * 255 + 0.5, 0, 255).astype(np.uint8))
        alphas.append(np.clip(np.asarray(out.alpha) * 255 + 0.5, 0, 255).astype(np.uint8))
    return np.stack(frames), np.stack(alphas), transforms


def project_keypoints(r: rig.Rig, transforms, camera: Camera) -> dict[str, np.ndarray]:
    """Exact keypoints of the record layout (pixels, confidence 1 where defined and in view)."""
    out = {}
    for name, (posed, defined) in rig.keypoints_3d(r, transforms).items():
        flat = posed.reshape(-1, 3)
        uv, z = (np.asarray(a) for a in camera.project(jnp.asarray(flat)))
        uv, z = uv.reshape(*posed.shape[:-1], 2), z.reshape(posed.shape[:-1])
        inside = (z > 0.01) & (uv[..., 0] >= 0) & (uv[..., 0] <= camera.width) & (uv[..., 1] >= 0) & (
            uv[..., 1] <= camera.height)
        conf = (inside & defined[None]).astype(np.float32)
        out[name], out[name + "_conf"] = np.where(conf[..., None] > 0, uv, 0.0).astype(np.float32), conf
    return out


AVATARS_DIR = "avatars"


def avatar_path(root: str, subject: str) -> str:
    """Where a dataset keeps the avatar its clips show: ``root/avatars/<subject>.npz``."""
    return os.path.join(root, AVATARS_DIR, f"{subject}.npz")


def save_rig_avatar(path: str, r: rig.Rig) -> None:
    """Write the rigged figure the clips are rendered from (what training must deform) and its landmarks.

    Landmarks follow :mod:`avatar_jax.model.landmarks`' order (pose 33, face 478, left hand 21, right
    hand 21): ``landmarks (553,3)`` rest positions, ``landmarks_defined (553,)`` (False: the rig has none).
    """
    fig = r.figure
    order = [r.keypoints["body"], r.keypoints["face"]] + [tuple(a[k] for a in r.keypoints["hands"]) for k in (0, 1)]
    rest = np.concatenate([np.asarray(e[0], np.float32).reshape(-1, 3) for e in order])
    defined = np.concatenate([np.asarray(e[2], bool).reshape(-1) for e in order])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npz"
    # The rig itself (bone weights, pivots, regions, jaw and lid ranges): with a clip's stored controls it
    # gives the teacher's pose at any frame, so training windows can start from it (train/avatar.py).
    np.savez(tmp, means=fig.means, quats=fig.quats, scales=fig.scales, opacities=fig.opacities, colors=fig.colors,
             part=fig.part.astype(np.int32), landmarks=rest, landmarks_defined=defined,
             rig_weights=np.asarray(r.weights, np.float32), rig_pivots=np.asarray(r.pivots, np.float32),
             rig_region=np.asarray(r.region, np.int32), rig_scalars=np.asarray(
                 [r.jaw_max_rad, r.lid_drop, r.mouth_half_width], np.float32),
             rig_points=np.stack([r.head_centre, r.head_radii, r.mouth]).astype(np.float32))
    os.replace(tmp, path)


def load_rig(path: str) -> rig.Rig | None:
    """The :class:`rig.Rig` saved by :func:`save_rig_avatar` (without its keypoint table), or None for a file
    written before the rig was stored."""
    fig, _, _ = load_rig_avatar(path)
    with np.load(path) as z:
        if "rig_weights" not in z:
            return None
        jaw, lid, half_width = (float(x) for x in z["rig_scalars"])
        centre, radii, mouth = np.asarray(z["rig_points"])
        return rig.Rig(figure=fig, weights=np.asarray(z["rig_weights"]), pivots=np.asarray(z["rig_pivots"]),
                       keypoints={}, head_centre=centre, head_radii=radii, mouth=mouth, mouth_half_width=half_width,
                       lid_drop=lid, jaw_max_rad=jaw, region=np.asarray(z["rig_region"]))


def load_rig_avatar(path: str) -> tuple[rig.Figure, np.ndarray, np.ndarray]:
    """``(figure, landmarks (553,3), landmarks_defined (553,))`` from :func:`save_rig_avatar`'s file."""
    try:
        with np.load(path) as z:
            fig = rig.Figure(*(np.asarray(z[f.name]) for f in dataclasses.fields(rig.Figure)))
            return fig, np.asarray(z["landmarks"], np.float32), np.asarray(z["landmarks_defined"], bool)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot read the dataset avatar {path!r}: {e}") from None


@dataclasses.dataclass
class SyntheticClip:
    frames: np.ndarray  # (T,H,W,3) uint8
    masks: np.ndarray  # (T,H,W) uint8
    audio: np.ndarray  # (S,) float32 16 kHz, S = round(T·16000/fps)
    keypoints: dict[str, np.ndarray]
    controls: motion.Controls
    phonemes: list
    camera: Camera
    text: str
    voice: str


def make_clip(r: rig.Rig, text: str, voice: str, *, size: int = 96, framing: str = "upper_body", fps: float = 25.0,
              seed: int = 0, fov_y_deg: float = 30.0, capacity: int | None = None) -> SyntheticClip:
    from avatar_jax.audio.tts import synthesize_detailed

    speech = synthesize_detailed(text, voice)
    t_count = int(np.ceil(speech.audio.size * fps / schema.SAMPLE_RATE))
    n = int(schema.audio_bounds(t_count, fps))
    audio = np.pad(speech.audio, (0, n - speech.audio.size)).astype(np.float32)
    controls = motion.from_speech(speech.phonemes, audio, t_count, fps=fps, seed=seed)
    camera = frame_camera(r, size, framing, fov_y_deg)
    frames, masks, transforms = render_frames(r, controls, camera, capacity=capacity)
    kp = project_keypoints(r, transforms, camera)
    return SyntheticClip(frames, masks, audio, kp, controls, speech.phonemes, camera, text, voice)


def write_synthetic_clip(out: str, clip_id: str, subject: str, clip: SyntheticClip, extra: dict) -> schema.ClipMeta:
    c = clip.controls
    meta = schema.ClipMeta(
        clip_id=clip_id, subject_id=subject, num_frames=c.num_frames, fps=float(schema.SAMPLE_RATE) / (
            clip.audio.size / c.num_frames), width=clip.camera.width, height=clip.camera.height,
        K=np.asarray(clip.camera.K).tolist(), viewmat=np.asarray(clip.camera.viewmat).tolist(), transcript=clip.text,
        source="synthetic",
        extra={**extra, "voice": clip.voice, "phonemes": [list(p) for p in clip.phonemes],
               "controls": {f.name: np.asarray(getattr(c, f.name)).round(5).tolist()
                            for f in dataclasses.fields(c)}})
    meta.fps = round(meta.fps, 6)
    return records.write_clip(out, meta, clip.frames, clip.masks, clip.audio, clip.keypoints)


def _clip_id(subject: str, voice: str, k: int) -> str:
    tag = hashlib.sha1(voice.encode()).hexdigest()[:6]
    return f"{subject}_{voice.replace('+', '-')}_{tag}_{k:03d}"


def prepare_synthetic(avatar: str, out: str, opts: SyntheticOptions, *, workers: int = 1, force: bool = False,
                      held_out: float = 0.1, seed: int = 0, progress: bool = True) -> dict:
    """Write ``subjects x voices x sentences`` synthetic clips into ``out`` (resumable) and the index."""
    del workers  # one process: libespeak-ng and the jitted renderer are per-process state
    from rich.progress import Progress

    os.makedirs(out, exist_ok=True)
    jobs = [(s, v, k) for s in range(opts.subjects) for v in opts.voices for k in range(opts.sentences)]
    rigs: dict[int, tuple[rig.Rig, int]] = {}
    done = 0
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("synthetic clips", total=len(jobs))
        for s, voice, k in jobs:
            subject = f"{'synthetic' if avatar == 'synthetic' else os.path.basename(os.path.normpath(avatar))}_{s}"
            clip_id = _clip_id(subject, voice, k)
            todo = force or not records.is_complete(out, clip_id)
            if s not in rigs and (todo or not os.path.exists(avatar_path(out, subject))):
                built = rig.build_rig(figure_from_avatar(avatar, opts.num_gaussians, seed=seed + s), seed=s)
                cam = frame_camera(built, opts.size, opts.framing, opts.fov_y_deg)
                rigs[s] = (built, render_capacity(built, cam))
                save_rig_avatar(avatar_path(out, subject), built)  # training deforms this same avatar
            if todo:
                category, text = corpus.sentences(1, offset=k + s)[0]
                clip = make_clip(rigs[s][0], text, voice, size=opts.size, framing=opts.framing, fps=opts.fps,
                                 seed=seed + 7919 * s + k, fov_y_deg=opts.fov_y_deg, capacity=rigs[s][1])
                write_synthetic_clip(out, clip_id, subject, clip, {"category": category, "avatar": avatar})
                done += 1
            bar.advance(task)
    idx = index.build_index(out, held_out=held_out, seed=seed)
    report = {"clips": len(idx["clips"]), "written": done, "skipped": len(jobs) - done}
    with open(os.path.join(out, "prepare_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report
