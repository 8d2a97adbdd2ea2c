"""``avatar-jax reconstruct --image PHOTO --out DIR``: a canonical Gaussian avatar from one photo.

Pipeline: MediaPipe Holistic keypoints and person mask -> fit camera placement, body shape and pose
(:mod:`avatar_jax.personalize.body_fit`) -> Gaussians on the fitted body, skinned into the photo's pose,
fitted to the photo (:mod:`avatar_jax.personalize.photometric`) -> the canonical avatar in rest pose.

Writes (all at once, from a temporary folder moved into place at the end): ``avatar.ply`` (3DGS
viewers), ``avatar.npz`` (cloud + template bindings + body fit), ``overlay.png`` (photo | fitted
render, detected keypoints green, fitted red), ``turntable.png`` (canonical avatar from N azimuths),
``report.json`` (PSNR, keypoint error, timings).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console

from avatar_jax.body import lbs, phenotype
from avatar_jax.body.template import load_template
from avatar_jax.errors import InputError
from avatar_jax.gaussians import avatar_file, init, ply
from avatar_jax.geometry import camera as cam_lib
from avatar_jax.personalize import body_fit, detect, photometric
from avatar_jax.render import render


def add_arguments(parser):
    parser.add_argument("--image", required=True, help="photo of one person (png/jpg)")
    parser.add_argument("--out", required=True, help="output folder")


def load_image(path: str) -> np.ndarray:
    """RGB uint8 ``(H,W,3)``; a clear :class:`InputError` for anything else."""
    if not os.path.isfile(path):
        raise InputError(f"no such image file: {path}")
    try:
        img = iio.imread(path)
    except Exception as e:  # imageio raises many types for non-images
        raise InputError(f"{path} is not a readable image ({type(e).__name__})") from None
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise InputError(f"{path}: expected an RGB image, got an array of shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(img.astype(np.float64) / (np.iinfo(img.dtype).max if img.dtype.kind in "ui" else 1.0) * 255,
                      0, 255).astype(np.uint8)
    if min(img.shape[:2]) < detect.MIN_SIDE:
        raise InputError(f"{path} is too small ({img.shape[1]}x{img.shape[0]}); need at least {detect.MIN_SIDE} "
                         "pixels on each side")
    return np.ascontiguousarray(img[..., :3])


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(jax.image.resize(jnp.asarray(img, jnp.float32), (height, width, *img.shape[2:]), "linear",
                                       antialias=True))


def _dots(img: np.ndarray, points: np.ndarray, keep: np.ndarray, color) -> None:
    h, w = img.shape[:2]
    for x, y in points[keep]:
        i, j = int(y), int(x)
        img[max(i - 1, 0) : min(i + 2, h), max(j - 1, 0) : min(j + 2, w)] = color


def turntable(cloud, views: int, size: int) -> np.ndarray:
    """``(size, views*size, 3)`` uint8 strip of the canonical avatar seen from ``views`` azimuths."""
    means = np.asarray(cloud.means)
    lo, hi = means.min(0), means.max(0)
    centre = 0.5 * (lo + hi)
    radius = 1.15 * (hi[1] - lo[1]) / (2 * np.tan(np.radians(15)))
    cams = cam_lib.orbit(views, radius=float(radius), width=size, height=size, target=tuple(centre.tolist()),
                         fov_y_deg=30.0)
    args = cloud.render_args()
    panels = [np.asarray(render(camera=cams[k], background=(1.0, 1.0, 1.0), **args).rgb) for k in range(views)]
    return (np.clip(np.concatenate(panels, axis=1), 0, 1) * 255).astype(np.uint8)


def reconstruct(image: np.ndarray, config, console: Console | None = None) -> tuple[dict, dict]:
    """Run the pipeline on ``image (H,W,3) uint8`` -> (files to write {name: bytes-producing value}, report)."""
    c = config.reconstruct
    say = console.print if console is not None else (lambda *a, **k: None)
    t0 = time.perf_counter()
    times = {}
    det = detect.detect(image, c.mediapipe_python)
    times["keypoints_s"] = time.perf_counter() - t0
    say(f"[1/4] keypoints: {int((det.confidence > 0.5).sum())} of 553 seen ({times['keypoints_s']:.1f}s)")

    tpl = load_template()
    h, w = image.shape[:2]
    t = time.perf_counter()
    fit = body_fit.fit_body(tpl, det.keypoints, det.confidence, w, h, fov_y_deg=c.fov_y_deg, steps=c.body_steps)
    times["body_fit_s"] = time.perf_counter() - t
    say(f"[2/4] body fit: keypoint error {100 * fit.error_fraction:.2f}% of image height "
        f"({times['body_fit_s']:.1f}s)")

    t = time.perf_counter()
    verts, joints = phenotype.shaped_rest(tpl, jnp.asarray(fit.phenotype))
    cloud = init.init_on_template(tpl, c.num_gaussians, vertices=np.asarray(verts), sh_degree=c.sh_degree,
                                  seed=config.seed)
    _, skinning = lbs.forward_kinematics(tpl, joints, jnp.asarray(fit.pose), jnp.asarray(fit.root))
    s = c.work_size / max(h, w)
    ww, wh = max(1, round(w * s)), max(1, round(h * s))
    k = np.asarray(fit.camera.K).copy()
    k[0] *= ww / w
    k[1] *= wh / h
    cam = cam_lib.Camera(jnp.asarray(fit.camera.viewmat), jnp.asarray(k), ww, wh)
    photo = _resize(image.astype(np.float32) / 255.0, ww, wh)
    mask = (_resize(det.mask[..., None], ww, wh)[..., 0] > 0.5).astype(np.float32)

    def tick(i, loss):
        if i % 20 == 0 or i == c.photo_steps - 1:
            say(f"      photometric step {i + 1}/{c.photo_steps}: loss {loss:.4f}")

    pf = photometric.fit_photo(cloud, skinning, cam, np.clip(photo, 0, 1), mask, steps=c.photo_steps, lr=c.photo_lr,
                               progress=tick)
    times["photometric_s"] = time.perf_counter() - t
    say(f"[3/4] photometric fit: PSNR {pf.psnr_in_mask:.2f} dB inside the person mask at {ww}x{wh} "
        f"({times['photometric_s']:.1f}s)")

    t = time.perf_counter()
    strip = turntable(pf.cloud, c.turntable_views, c.turntable_size)
    overlay_l = (np.clip(photo, 0, 1) * 255).astype(np.uint8)
    overlay_r = (np.clip(pf.rgb + (1 - pf.alpha[..., None]) * photo * 0.3, 0, 1) * 255).astype(np.uint8)
    seen = det.confidence > 0.5
    _dots(overlay_l, det.keypoints * s, seen, (0, 255, 0))
    _dots(overlay_l, fit.keypoints * s, seen, (255, 0, 0))
    overlay = np.concatenate([overlay_l, overlay_r], axis=1)
    times["previews_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - t0
    report = dict(psnr_in_mask_db=pf.psnr_in_mask, keypoint_error_fraction_of_height=fit.error_fraction,
                  work_resolution=[ww, wh], num_gaussians=int(pf.cloud.num), seen_gaussians=int(pf.seen.sum()),
                  phenotype=dict(zip(phenotype.PHENOTYPE_NAMES, map(float, fit.phenotype), strict=True)), **times)
    outputs = dict(cloud=pf.cloud, overlay=overlay, turntable=strip, fit=fit, camera=cam)
    return outputs, report


def write_outputs(out_dir: str, outputs: dict, report: dict) -> None:
    """Write everything into a temporary folder next to ``out_dir``, then move it into place."""
    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".reconstruct-", dir=parent)
    try:
        cloud, fit = outputs["cloud"], outputs["fit"]
        ply.write_ply(os.path.join(tmp, "avatar.ply"), cloud.means, cloud.log_scales, cloud.quats,
                      cloud.opacity_logits, cloud.sh)
        avatar_file.save_avatar(os.path.join(tmp, "avatar.npz"), cloud, phenotype=fit.phenotype, pose=fit.pose,
                                root=fit.root, viewmat=np.asarray(outputs["camera"].viewmat),
                                K=np.asarray(outputs["camera"].K),
                                image_size=np.array([outputs["camera"].width, outputs["camera"].height]))
        iio.imwrite(os.path.join(tmp, "overlay.png"), outputs["overlay"])
        iio.imwrite(os.path.join(tmp, "turntable.png"), outputs["turntable"])
        with open(os.path.join(tmp, "report.json"), "w") as f:
            json.dump(report, f, indent=2)
        os.makedirs(out_dir, exist_ok=True)
        for name in sorted(os.listdir(tmp)):
            os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, config) -> int:
    console = Console(stderr=False)
    image = load_image(args.image)
    outputs, report = reconstruct(image, config, console)
    write_outputs(args.out, outputs, report)
    console.print(f"[4/4] wrote {args.out}/avatar.ply, avatar.npz, overlay.png, turntable.png, report.json; "
                  f"PSNR {report['psnr_in_mask_db']:.2f} dB, keypoint error "
                  f"{100 * report['keypoint_error_fraction_of_height']:.2f}% of height, "
                  f"total {report['total_s']:.1f}s")
    return 0
