"""A Table-2-style evaluation report: several methods rendered on the same held-out clips, scored with
the project's metrics against the clips' ground truth, written as JSON, markdown and one PNG per method.

    clips [EvalClip] + methods {name: [MethodOutput per clip]} ──► score_methods ──► report dict
      ──► write_report(out_dir) ──► report.json, report.md, frames_<method>.png (+ frames_ground_truth.png)

Metrics per clip, then averaged over clips (frame-weighted where per frame):

- ``psnr`` (dB, of the clip's mean squared error over frames) inside the person mask and ``ssim``
  (full frame) against the ground-truth frames;
- ``sync_lag`` / ``sync_corr``: the offline audio-to-mouth-opening measure on face landmarks (the
  method's own landmarks when it gives them, MediaPipe Face Mesh on its frames when asked);
- ``lpips``: LPIPS distance to the ground-truth frames (mean over frames) when an LPIPS is given;
- ``csim``: dlib face descriptor similarity to the clip's first ground-truth frame (when dlib is there);
- ``hkc`` / ``hkv``: MediaPipe Hands on the frames (when asked: it runs in the MediaPipe venv);
- ``sync_c`` / ``sync_d``: SyncNet confidence / distance on 224x224 face crops (a fixed box around the
  clip's face keypoints) when a SyncNet is given;
- ``fid`` over all frames of all clips, when an Inception is given; ``fvd`` when a feature function is.

A metric that cannot run says why in ``report["missing"]`` (what to install or provide) instead of a number.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from avatar_jax.errors import InputError
from avatar_jax.eval import fid as fid_lib
from avatar_jax.eval import fvd as fvd_lib
from avatar_jax.eval import sync as sync_lib
from avatar_jax.eval.psnr import mse
from avatar_jax.eval.ssim import ssim

GROUND_TRUTH = "ground truth"


@dataclasses.dataclass(frozen=True)
class EvalClip:
    """One held-out clip: ``frames (T,H,W,3)`` uint8, ``mask (T,H,W)`` uint8, ``audio (S,)`` at 16 kHz,
    ground-truth face keypoints ``face (T,478,2)`` in pixels (or None), the clip camera ``K (3,3)``,
    ``viewmat (4,4)`` (for methods that render)."""

    clip_id: str
    frames: np.ndarray
    mask: np.ndarray
    audio: np.ndarray
    face: np.ndarray | None
    fps: float = 25.0
    K: np.ndarray | None = None
    viewmat: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class MethodOutput:
    """A method's render of one clip: ``frames (T,H,W,3)`` float in [0,1] and, optionally, its own face
    landmarks ``face (T,478,2)`` in pixels (for the offline sync measure)."""

    frames: np.ndarray
    face: np.ndarray | None = None


@dataclasses.dataclass
class Options:
    syncnet: object | None = None  # avatar_jax.eval.syncnet.SyncNet
    inception: object | None = None  # avatar_jax.eval.inception.InceptionV3FID
    fvd_features: Callable | None = None  # clips (N,T,H,W,3) -> (N,D)
    lpips: object | None = None  # avatar_jax.eval.lpips.LPIPS
    csim: bool = True
    mediapipe: bool = False  # HKC/HKV and Face Mesh sync on the rendered frames
    max_lag: int = 5


def face_box(face: np.ndarray, height: int, width: int, scale: float = 1.5) -> tuple[int, int, int]:
    """A square ``(top, left, size)`` around all frames' face keypoints ``(T,478,2)``, ``scale`` x their extent."""
    pts = np.asarray(face, np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(1)]
    if len(pts) == 0:
        raise InputError("no face keypoints to place the SyncNet crop")
    lo, hi = pts.min(0), pts.max(0)
    centre, size = (lo + hi) / 2, int(math.ceil(scale * float((hi - lo).max())))
    size = max(8, min(size, height, width))
    left = int(np.clip(round(centre[0] - size / 2), 0, width - size))
    top = int(np.clip(round(centre[1] - size / 2), 0, height - size))
    return top, left, size


def crop_resize(frames: np.ndarray, box: tuple[int, int, int], out: int = 224) -> np.ndarray:
    """``(T,H,W,3)`` -> ``(T,out,out,3)`` uint8: the box, resized bilinearly."""
    top, left, size = box
    crop = np.asarray(frames, np.float32)[:, top : top + size, left : left + size]
    if crop.max() <= 1.0 + 1e-6:
        crop = crop * 255.0
    import jax

    resized = jax.image.resize(jnp.asarray(crop), (len(crop), out, out, 3), "linear")
    return np.clip(np.round(np.asarray(resized)), 0, 255).astype(np.uint8)


def _to_unit(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    return frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else frames.astype(np.float32)


def _pooled_psnr(frame_mse: jnp.ndarray) -> float:
    """PSNR (dB, data range 1) of the clip's mean squared error over all its frames (inf when identical)."""
    m = float(jnp.mean(frame_mse))
    return float("inf") if m == 0.0 else float(10.0 * np.log10(1.0 / m))


def _clip_scores(clip: EvalClip, out: MethodOutput, opts: Options, missing: dict, embedder) -> dict:
    pred, gt = _to_unit(out.frames), _to_unit(clip.frames)
    if pred.shape != gt.shape:
        raise InputError(f"clip {clip.clip_id}: method frames {pred.shape} differ from ground truth {gt.shape}")
    mask = jnp.asarray(clip.mask, jnp.float32) / 255.0
    s = {
        "frames": len(gt),
        "psnr": _pooled_psnr(mse(jnp.asarray(pred), jnp.asarray(gt), mask)),
        "ssim": float(jnp.mean(ssim(jnp.asarray(pred), jnp.asarray(gt)))),
    }
    if opts.lpips is not None:
        from avatar_jax.eval.lpips import lpips

        try:
            s["lpips"] = float(np.mean(lpips(opts.lpips, pred, gt)))
        except InputError as e:
            missing.setdefault("lpips", str(e))
    s.update(_sync(clip, out.face, pred, opts, missing))
    s.update(_identity(clip, pred, embedder, missing))
    if opts.mediapipe:
        from avatar_jax.eval.hands import hand_metrics

        hm = hand_metrics(pred)
        s["hkc"], s["hkv"] = float(hm.hkc), float(hm.hkv)
    if opts.syncnet is not None and clip.face is not None:
        from avatar_jax.eval.syncnet import sync_scores

        box = face_box(clip.face, *gt.shape[1:3])
        sc = sync_scores(opts.syncnet, crop_resize(pred, box), clip.audio, fps=clip.fps)
        s["sync_c"], s["sync_d"], s["sync_offset"] = sc.confidence, sc.min_dist, sc.offset
    return s


def _sync(clip, face, pred, opts, missing) -> dict:
    if face is not None:
        opening = sync_lib.mouth_opening(face)
        if np.nanstd(opening) <= 1e-6 * max(float(np.nanmean(np.abs(opening))), 1e-12):
            return {"sync_corr": 0.0}  # a mouth that never moves follows no speech (no lag to report)
    try:
        if face is not None:
            r = sync_lib.offline_sync(clip.audio, face=face, fps=clip.fps, max_lag=opts.max_lag)
        elif opts.mediapipe:
            r = sync_lib.offline_sync(clip.audio, frames=pred, fps=clip.fps, max_lag=opts.max_lag)
        else:
            missing.setdefault("sync_lag", "no face landmarks for this method (pass --mediapipe to detect them)")
            return {}
    except InputError as e:
        missing.setdefault("sync_lag", str(e))
        return {}
    return {"sync_lag": int(r.lag), "sync_corr": float(r.correlation)}


def _identity(clip, pred, embedder, missing) -> dict:
    if embedder is None:
        return {}
    try:
        r = embedder(clip.frames[0], pred)
    except InputError as e:
        missing.setdefault("csim", str(e))
        return {}
    return {"csim": float(r.csim)} if np.isfinite(r.csim) else {}


def _make_embedder(opts: Options, missing: dict):
    if not opts.csim:
        return None
    try:
        from avatar_jax.eval import identity

        face = identity.FaceEmbedder()
    except Exception as e:  # noqa: BLE001 - dlib or its models absent: say what to install
        missing["csim"] = f"dlib face descriptor unavailable ({type(e).__name__}: {e}); pip install '.[eval]'"
        return None
    return lambda ref, frames: identity.csim(ref, frames, face)


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [(r[key], r["frames"]) for r in rows if key in r and np.isfinite(r[key])]
    if not vals:
        return None
    return float(sum(v * w for v, w in vals) / sum(w for _, w in vals))


METRICS = ("psnr", "ssim", "lpips", "sync_corr", "sync_lag", "csim", "hkc", "hkv", "sync_c", "sync_d", "fid", "fvd")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "sync_corr": True, "csim": True, "hkc": True,
                    "sync_c": True, "sync_d": False, "fid": False, "fvd": False, "sync_lag": None, "hkv": None}


def score_methods(clips: list[EvalClip], methods: dict[str, list[MethodOutput]], opts: Options | None = None) -> dict:
    """Scores of every method on every clip, and their frame-weighted means (the table)."""
    opts = opts or Options()
    if not clips:
        raise InputError("no clips to evaluate")
    missing: dict[str, str] = {}
    embedder = _make_embedder(opts, missing)
    report = {"clips": [c.clip_id for c in clips], "frames": int(sum(len(c.frames) for c in clips)),
              "methods": {}, "per_clip": {}, "missing": missing}
    gt_face = {GROUND_TRUTH: [MethodOutput(c.frames, c.face) for c in clips]}
    for name, outputs in {**gt_face, **methods}.items():
        if len(outputs) != len(clips):
            raise InputError(f"method {name!r} has {len(outputs)} renders for {len(clips)} clips")
        rows = [_clip_scores(c, o, opts, missing, embedder) for c, o in zip(clips, outputs, strict=True)]
        table = {k: _mean(rows, k) for k in METRICS if any(k in r for r in rows)}
        if opts.inception is not None:
            fake = np.concatenate([_to_unit(o.frames) for o in outputs])
            real = np.concatenate([_to_unit(c.frames) for c in clips])
            table["fid"] = fid_lib.fid(real, fake, model=opts.inception)
        if opts.fvd_features is not None and len(clips) < 2:
            missing["fvd"] = "FVD needs at least 2 clips (a covariance over clips)"
        elif opts.fvd_features is not None:
            table["fvd"] = fvd_lib.fvd(np.stack([_to_unit(c.frames) for c in clips]),
                                       np.stack([_to_unit(o.frames) for o in outputs]), opts.fvd_features)
        report["methods"][name] = table
        report["per_clip"][name] = rows
    if opts.lpips is None:
        missing.setdefault("lpips", "LPIPS weights not given (--lpips alex.pth --lpips-backbone "
                                    "alexnet-owt-7be5be79.pth)")
    if opts.syncnet is None:
        missing.setdefault("sync_c", "SyncNet weights not given (--syncnet syncnet_v2.model)")
    if opts.inception is None:
        missing.setdefault("fid", "Inception weights not given (--inception pt_inception-2015-12-05-6726825d.pth)")
    if opts.fvd_features is None:
        missing.setdefault("fvd", "I3D weights not given (--i3d i3d_pretrained_400.pt)")
    if not opts.mediapipe:
        missing.setdefault("hkc", "MediaPipe Hands not run (pass --mediapipe; needs make mediapipe-venv)")
    return report


def markdown(report: dict, title: str = "Evaluation") -> str:
    """The methods x metrics table (arrows give the better direction), then what could not be measured."""
    cols = [k for k in METRICS if any(report["methods"][m].get(k) is not None for m in report["methods"])]
    arrow = {True: " ↑", False: " ↓", None: ""}
    lines = [f"# {title}", "", f"{len(report['clips'])} clips, {report['frames']} frames.", "",
             "| method | " + " | ".join(f"{c}{arrow[HIGHER_IS_BETTER[c]]}" for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, table in report["methods"].items():
        cells = []
        for c in cols:
            v = table.get(c)
            cells.append("–" if v is None else f"{v:.1f}" if c == "sync_lag" else f"{v:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report["missing"]:
        lines += ["", "Not measured:", ""] + [f"- {k}: {v}" for k, v in report["missing"].items()]
    return "\n".join(lines) + "\n"


def frame_strip(frames: np.ndarray, count: int = 6) -> np.ndarray:
    """``count`` evenly spaced frames of ``(T,H,W,3)`` side by side -> ``(H, count*W, 3)`` uint8."""
    frames = np.asarray(frames)
    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    strip = np.concatenate(list(frames[idx]), axis=1)
    if strip.dtype != np.uint8:
        strip = np.clip(np.round(strip * 255.0), 0, 255).astype(np.uint8)
    return strip


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def write_report(out_dir: str, report: dict, clips: list[EvalClip], methods: dict[str, list[MethodOutput]],
                 title: str = "Evaluation") -> dict[str, str]:
    """``report.json``, ``report.md`` and ``frames_<method>.png`` (every clip a row of frames) in ``out_dir``."""
    import imageio.v3 as iio

    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "report.json"), "markdown": os.path.join(out_dir, "report.md")}
    with open(paths["json"], "w") as f:
        json.dump(report, f, indent=1, default=float)
    with open(paths["markdown"], "w") as f:
        f.write(markdown(report, title))
    all_methods = {GROUND_TRUTH: [MethodOutput(c.frames) for c in clips], **methods}
    for name, outputs in all_methods.items():
        rows = [frame_strip(o.frames) for o in outputs]
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
        paths[name] = os.path.join(out_dir, f"frames_{slug(name)}.png")
        iio.imwrite(paths[name], np.concatenate(rows, axis=0))
    return paths
