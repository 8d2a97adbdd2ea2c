"""Single-photo reconstruction: a canonical Gaussian avatar from one photo (library of ``avatar-jax reconstruct``).

Pipeline: MediaPipe Holistic keypoints and person mask (the largest person, or ``person``) -> fit camera
placement, body shape and pose (:mod:`avatar_jax.personalize.body_fit`) -> Gaussians on the fitted body,
skinned into the photo's pose, fitted to the photo and to zoomed face/hand crops, visibility-aware
(:mod:`avatar_jax.personalize.photometric`; the skin below the ears without fins, hair hung round the unseen
back of the head, :mod:`avatar_jax.personalize.hair`) -> the canonical avatar in rest pose, with a quality report.

Files (written by :func:`write_outputs` into a staging folder, moved into place by
:mod:`avatar_jax.personalize.output_dir`): ``avatar.ply`` (3DGS viewers), ``avatar.npz`` (cloud +
template bindings + body fit), ``overlay.png`` (photo | fitted render, detected keypoints green, fitted
red), ``turntable.png`` (canonical avatar from N azimuths), ``report.json`` (metrics, bars, warnings).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.body import lbs, phenotype
from avatar_jax.body.template import load_template
from avatar_jax.gaussians import avatar_file, init, ply
from avatar_jax.gaussians.cloud import dc_from_rgb, rgb_from_dc
from avatar_jax.geometry import camera as cam_lib
from avatar_jax.personalize import body_fit, crops, densify, detect, hair, photometric, quality, surface_graph
from avatar_jax.render import render

# Settings with defaults here, so older configs keep working: config.reconstruct.KEY overrides them.
DEFAULTS = dict(crop_size=128, max_offset=0.05, max_slide=0.03, offset_smooth=1.0, crop_weight=0.5,
                densify_fraction=0.3, densify_max_new=3000, densify_at=0.35, silhouette_weight=1.0,
                skin_offset=0.015, hair_thickness=0.015, hair_drop=0.08)


def _setting(c, key):
    return c[key] if key in c else DEFAULTS[key]


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(jax.image.resize(jnp.asarray(img, jnp.float32), (height, width, *img.shape[2:]), "linear",
                                       antialias=True))


def _dots(img: np.ndarray, points: np.ndarray, keep: np.ndarray, color) -> None:
    h, w = img.shape[:2]
    for x, y in points[keep]:
        i, j = int(y), int(x)
        img[max(i - 1, 0) : min(i + 2, h), max(j - 1, 0) : min(j + 2, w)] = color


def orbit_views(cloud, azimuths_deg, size: int, background=(1.0, 1.0, 1.0), with_alpha: bool = False):
    """``(V,size,size,3)`` float renders of the canonical avatar from azimuths (0 = front, 180 = back)
    (and their alpha ``(V,size,size)`` if ``with_alpha``)."""
    means = np.asarray(cloud.means)
    lo, hi = means.min(0), means.max(0)
    centre = 0.5 * (lo + hi)
    radius = 1.15 * (hi[1] - lo[1]) / (2 * np.tan(np.radians(15)))
    cams = []
    for a in np.radians(np.asarray(azimuths_deg, np.float64)):
        # The canonical body faces -z: azimuth 0 puts the camera in front of it.
        eye = centre + radius * np.array([np.sin(a), 0.0, -np.cos(a)])
        cams.append(cam_lib.look_at(tuple(eye.tolist()), tuple(centre.tolist()), width=size, height=size,
                                    fov_y_deg=30.0))
    args = cloud.render_args()
    out = render(camera=cam_lib.stack(cams), background=background, **args)
    rgb = np.clip(np.asarray(out.rgb), 0, 1)
    return (rgb, np.asarray(out.alpha)) if with_alpha else rgb


def turntable(cloud, views: int, size: int) -> np.ndarray:
    """``(size, views*size, 3)`` uint8 strip of the canonical avatar seen from ``views`` azimuths."""
    panels = orbit_views(cloud, np.arange(views) * 360.0 / views, size)
    return (np.concatenate(list(panels), axis=1) * 255).astype(np.uint8)


def _cpu_with_children() -> float:
    """CPU seconds of this process and of its finished subprocesses (MediaPipe runs in one)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _hang_hair(pf: photometric.PhotoFit, ear_points: np.ndarray, thickness: float, drop: float):
    """The fitted avatar with hair hanging round the unseen back of the head (:mod:`hair`), in the colour
    of the back of the skull; its offsets (``max_from_surface`` in the report) include the push."""
    cloud = pf.cloud
    means, part = np.asarray(cloud.means), np.asarray(cloud.part)
    moved, weight = hair.hair_curtain(means, part, pf.seen, ear_points, thickness=thickness, drop=drop)
    if not weight.any():  # nothing unseen behind the ears (a tiny cloud): nothing to hang
        return pf
    rgb = np.asarray(rgb_from_dc(cloud.sh[:, 0]))
    colour = hair.hair_colour(rgb, means, part, ear_points)
    rgb = rgb + weight[:, None] * (colour - rgb)
    cloud = cloud.replace(means=jnp.asarray(moved), sh=cloud.sh.at[:, 0].set(dc_from_rgb(jnp.asarray(rgb))))
    return dataclasses.replace(pf, cloud=cloud, offsets=pf.offsets + (moved - means))


def reconstruct(image: np.ndarray, config, say=None, person: int | None = None) -> tuple[dict, dict]:
    """Run the pipeline on ``image (H,W,3) uint8`` -> (outputs for :func:`write_outputs`, report dict)."""
    c = config.reconstruct
    say = say or (lambda *a, **k: None)
    t0, cpu0 = time.perf_counter(), time.process_time()
    times = {}
    # Per stage: on a shared machine wall seconds say little, CPU seconds (all threads) are what it costs.
    stage_cpu, mark = {}, [_cpu_with_children()]

    def cpu_done(stage):
        now = _cpu_with_children()
        stage_cpu[stage] = round(now - mark[0], 1)
        mark[0] = now

    det = detect.detect(image, c.mediapipe_python, person=person)
    times["keypoints_s"] = time.perf_counter() - t0
    cpu_done("keypoints")
    if det.people > 1:
        which = "the largest" if person is None else f"number {det.person} by size"
        say(f"      found {det.people} people; using person {det.person} ({which}; --person N picks another)")
    say(f"[1/4] keypoints: {int((det.confidence > 0.5).sum())} of 553 seen ({times['keypoints_s']:.1f}s)")

    tpl = load_template()
    h, w = image.shape[:2]
    t = time.perf_counter()
    fit = body_fit.fit_body(tpl, det.keypoints, det.confidence, w, h, fov_y_deg=c.fov_y_deg, steps=c.body_steps,
                            mask=(det.mask > 0.5).astype(np.float32),
                            silhouette_weight=float(_setting(c, "silhouette_weight")))
    times["body_fit_s"] = time.perf_counter() - t
    cpu_done("body_fit")
    shape = ", ".join(f"{n} {v:.2f}" for n, v in zip(phenotype.PHENOTYPE_NAMES, fit.phenotype, strict=True))
    say(f"[2/4] body fit: keypoint error {100 * fit.error_fraction:.2f}% of image height, silhouette IoU "
        f"{fit.silhouette_iou:.2f}; shape: {shape} ({times['body_fit_s']:.1f}s)")

    t = time.perf_counter()
    verts, joints = phenotype.shaped_rest(tpl, jnp.asarray(fit.phenotype))
    verts = np.asarray(verts)
    cloud = init.init_on_template(tpl, c.num_gaussians, vertices=verts, sh_degree=c.sh_degree, seed=config.seed)
    graph = surface_graph.for_cloud(tpl, cloud, verts)
    _, skinning = lbs.forward_kinematics(tpl, joints, jnp.asarray(fit.pose), jnp.asarray(fit.root))
    s = c.work_size / max(h, w)
    ww, wh = max(1, round(w * s)), max(1, round(h * s))
    k = np.asarray(fit.camera.K).copy()
    k[0] *= ww / w
    k[1] *= wh / h
    cam = cam_lib.Camera(jnp.asarray(fit.camera.viewmat), jnp.asarray(k), ww, wh)
    full = image.astype(np.float32) / 255.0
    photo = np.clip(_resize(full, ww, wh), 0, 1)
    mask = (_resize(det.mask[..., None], ww, wh)[..., 0] > 0.5).astype(np.float32)
    zoomed = None
    if _setting(c, "crop_size") > 0:
        zoomed = crops.crop_cameras(full, det.mask, det.keypoints, det.confidence, fit.camera,
                                    size=int(_setting(c, "crop_size")))

    def tick(i, loss):
        if i % 20 == 0 or i == c.photo_steps - 1:
            say(f"      photometric step {i + 1}/{c.photo_steps}: loss {loss:.4f}")

    dens = None
    if _setting(c, "densify_fraction") > 0 and _setting(c, "densify_max_new") > 0:
        dens = densify.Densify(tpl, verts, at_fraction=float(_setting(c, "densify_at")),
                               fraction=float(_setting(c, "densify_fraction")),
                               max_new=int(_setting(c, "densify_max_new")), seed=config.seed)
    ear_points = hair.ears(tpl, verts)
    bound, slide_bound = hair.offset_bounds(np.asarray(cloud.means), np.asarray(cloud.part), ear_points,
                                            float(_setting(c, "max_offset")), float(_setting(c, "max_slide")),
                                            below_ears=float(_setting(c, "skin_offset")))
    pf = photometric.fit_photo(cloud, skinning, cam, photo, mask, graph, crops=zoomed, steps=c.photo_steps,
                               lr=c.photo_lr, max_offset=float(_setting(c, "max_offset")),
                               max_slide=float(_setting(c, "max_slide")),
                               smooth_prior=float(_setting(c, "offset_smooth")),
                               crop_weight=float(_setting(c, "crop_weight")), densify=dens, progress=tick,
                               offset_bound=bound, slide_bound=slide_bound)
    if float(_setting(c, "hair_thickness")) > 0:
        pf = _hang_hair(pf, ear_points, float(_setting(c, "hair_thickness")), float(_setting(c, "hair_drop")))
    times["photometric_s"] = time.perf_counter() - t
    cpu_done("photometric")
    say(f"[3/4] photometric fit: PSNR {pf.psnr_in_mask:.2f} dB, SSIM {pf.ssim_in_mask:.3f} inside the person mask "
        f"at {ww}x{wh}; {100 * pf.seen_share:.0f}% of the surface seen; {pf.added} Gaussians added on face and "
        f"hands ({times['photometric_s']:.1f}s)")

    t = time.perf_counter()
    strip = turntable(pf.cloud, c.turntable_views, c.turntable_size)
    overlay_l = (photo * 255).astype(np.uint8)
    overlay_r = (np.clip(pf.rgb + (1 - pf.alpha[..., None]) * photo * 0.3, 0, 1) * 255).astype(np.uint8)
    seen = det.confidence > 0.5
    _dots(overlay_l, det.keypoints * s, seen, (0, 255, 0))
    _dots(overlay_l, fit.keypoints * s, seen, (255, 0, 0))
    overlay = np.concatenate([overlay_l, overlay_r], axis=1)
    times["previews_s"] = time.perf_counter() - t
    cpu_done("previews")
    times["total_s"] = time.perf_counter() - t0
    # CPU seconds of this process (all threads): on a busy shared machine wall time says little.
    times["cpu_s"] = time.process_time() - cpu0
    report = dict(psnr_in_mask_db=pf.psnr_in_mask, ssim_in_mask=pf.ssim_in_mask,
                  keypoint_error_fraction_of_height=fit.error_fraction, seen_surface_share=pf.seen_share,
                  crop_psnr_in_mask_db=pf.crop_psnr, people_found=det.people, person_used=det.person,
                  work_resolution=[ww, wh], num_gaussians=int(pf.cloud.num), seen_gaussians=int(pf.seen.sum()),
                  densified_gaussians=pf.added,
                  phenotype=dict(zip(phenotype.PHENOTYPE_NAMES, map(float, fit.phenotype), strict=True)),
                  body_silhouette_iou=fit.silhouette_iou,
                  avatar_silhouette_iou=float(((pf.alpha > 0.5) & (mask > 0.5)).sum()
                                              / max(((pf.alpha > 0.5) | (mask > 0.5)).sum(), 1)),
                  offset_m=dict(normal_mean_abs=float(np.abs(pf.normal_offsets).mean()),
                                normal_max_abs=float(np.abs(pf.normal_offsets).max()),
                                max_from_surface=float(np.linalg.norm(pf.offsets, axis=1).max()),
                                normal_bound=float(_setting(c, "max_offset"))), **times,
                  cpu_s_by_stage=stage_cpu)
    report["quality_bars"] = {key: f"{op} {bar}" for key, (op, bar) in quality.BARS.items()}
    report["warnings"] = quality.judge(report)
    outputs = dict(cloud=pf.cloud, overlay=overlay, turntable=strip, fit=fit, camera=cam)
    return outputs, report


def write_outputs(folder: str, outputs: dict, report: dict) -> None:
    """Write every output file into ``folder`` (the staging folder)."""
    cloud, fit = outputs["cloud"], outputs["fit"]
    ply.write_ply(os.path.join(folder, "avatar.ply"), cloud.means, cloud.log_scales, cloud.quats,
                  cloud.opacity_logits, cloud.sh)
    avatar_file.save_avatar(os.path.join(folder, "avatar.npz"), cloud, phenotype=fit.phenotype, pose=fit.pose,
                            root=fit.root, viewmat=np.asarray(outputs["camera"].viewmat),
                            K=np.asarray(outputs["camera"].K),
                            image_size=np.array([outputs["camera"].width, outputs["camera"].height]))
    iio.imwrite(os.path.join(folder, "overlay.png"), outputs["overlay"])
    iio.imwrite(os.path.join(folder, "turntable.png"), outputs["turntable"])
    with open(os.path.join(folder, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
