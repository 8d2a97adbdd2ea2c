"""Fit Gaussian colours, normal offsets, scales and opacities to the photo with the splat renderer.

The canonical Gaussians (on the fitted body in rest pose) are skinned into the photo's pose and
rendered from the photo's camera and, in one batched call, from zoomed crop cameras on the face and
hands (:mod:`avatar_jax.personalize.crops`). Loss per view: ``(1-λ) L1 + λ D-SSIM`` between the
render (on black) and the photo masked by the person segmentation, plus an alpha-vs-mask term so the
silhouette covers the person (clothes and hair are bigger than the body). Geometry moves mostly along
the template's surface normals (loose clothes, hair), by at most ``max_offset`` metres, and a little
along the surface (``max_slide``, so texture edges can line up); both are ``tanh``-bounded, so nothing
floats away, with a small-offset prior and a smoothness prior over the surface graph.

Appearance is visibility-aware (:mod:`avatar_jax.personalize.visibility`): colours start from the
transmittance-weighted photo colour each Gaussian really shows, only Gaussians the photo sees (visible
weight above ``seen_pixels``) keep fitted colours, and all others are filled smoothly over the body
surface (:mod:`avatar_jax.personalize.appearance_fill`): occluded chests never take a hand's colour.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from avatar_jax.body import lbs, parts
from avatar_jax.eval.ssim import ssim, ssim_map
from avatar_jax.gaussians.cloud import GaussianCloud, dc_from_rgb, rgb_from_dc
from avatar_jax.geometry import camera as cam_lib
from avatar_jax.geometry import quaternion
from avatar_jax.personalize import appearance_fill, surface_graph, visibility
from avatar_jax.personalize import densify as densify_lib
from avatar_jax.personalize.crops import Crops
from avatar_jax.personalize.surface_graph import SurfaceGraph
from avatar_jax.render import intersection_count, render

LOG_SCALE_RANGE = (-9.0, -2.5)


@dataclasses.dataclass(frozen=True)
class PhotoFit:
    """``cloud`` canonical after fitting; ``rgb (H,W,3)``/``alpha (H,W)`` render from the photo camera on
    black; PSNR/SSIM inside the person mask; ``seen (N,)`` Gaussians the photo shows (kept colours);
    ``seen_share`` their share of the body surface; ``offsets (N,3)`` metres from the template surface,
    ``normal_offsets (N,)`` their part along the normals."""

    cloud: GaussianCloud
    rgb: np.ndarray
    alpha: np.ndarray
    psnr_in_mask: float
    ssim_in_mask: float
    seen: np.ndarray
    seen_share: float
    offsets: np.ndarray
    normal_offsets: np.ndarray
    crop_psnr: dict
    added: int = 0


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def psnr_in_mask(render_rgb: np.ndarray, photo: np.ndarray, mask: np.ndarray) -> float:
    m = mask > 0.5
    mse = float(np.mean((render_rgb[m] - photo[m]) ** 2)) if m.any() else 1.0
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def ssim_in_mask(render_rgb: np.ndarray, photo: np.ndarray, mask: np.ndarray) -> float:
    """Mean of the SSIM map (photo masked, render on black) over the mask's pixels."""
    m = mask > 0.5
    smap = np.asarray(ssim_map(jnp.asarray(render_rgb), jnp.asarray(photo * mask[..., None])))
    return float(smap[m].mean()) if m.any() else 0.0


def normals_of(cloud: GaussianCloud) -> jax.Array:
    """Unit surface normals ``(N,3)``: the discs' third axis."""
    return quaternion.to_matrix(cloud.quats)[:, :, 2]


def pose_cloud(cloud: GaussianCloud, skinning: jax.Array, offsets: jax.Array | None = None):
    """Skin canonical Gaussians: returns posed ``means (N,3)`` and ``quats (N,4)``."""
    means = cloud.means if offsets is None else cloud.means + offsets
    posed, rot = lbs.skin_points(skinning, means, cloud.skin_joints, cloud.skin_weights)
    # Blended rotations are close to rotations; normalising the quaternion of the blend is enough here.
    q = quaternion.multiply(quaternion.from_matrix(rot), cloud.quats)
    return posed, q


def _capacity(means, quats, scales, camera) -> int:
    n = intersection_count(means, quats, scales * 1.5, camera)
    return 1 << int(2.0 * max(n, 1)).bit_length()


def _views_loss(out, target, mask, dssim_weight, mask_weight):
    """Per-view photometric loss of a (possibly batched) render against masked targets."""
    axes = tuple(range(out.rgb.ndim - 3, out.rgb.ndim))
    l1 = jnp.mean(jnp.abs(out.rgb - target), axis=axes)
    d_ssim = 1.0 - ssim(out.rgb, target)
    sil = jnp.mean(jnp.abs(out.alpha - mask), axis=axes[:-1])
    return (1 - dssim_weight) * l1 + dssim_weight * d_ssim + mask_weight * sil


def fit_photo(cloud: GaussianCloud, skinning: jax.Array, camera: cam_lib.Camera, photo: np.ndarray,
              mask: np.ndarray, graph: SurfaceGraph, *, crops: Crops | None = None, steps: int = 100,
              lr: float = 0.01, dssim_weight: float = 0.2, mask_weight: float = 0.5, crop_weight: float = 0.5,
              max_offset: float = 0.05, max_slide: float = 0.015, offset_prior: float = 1.0,
              smooth_prior: float = 10.0,
              seen_pixels: float = 0.3, min_facing: float = 0.3, sharp_init: bool = True,
              max_scale_growth: float = 3.0, inner_max_scale: float = 0.005, unseen_widen: float = 1.3,
              unseen_opacity: float = 0.98, offset_bound: np.ndarray | None = None,
              slide_bound: np.ndarray | None = None,
              densify: densify_lib.Densify | None = None, progress=None) -> PhotoFit:
    """``photo (H,W,3)`` in [0,1] and ``mask (H,W)`` at ``camera``'s resolution; ``graph`` over the cloud.

    A Gaussian counts as seen when its visible weight exceeds ``seen_pixels`` and its normal faces the
    camera by at least ``min_facing`` (cosine): at grazing angles (the side of the head near the ears)
    a Gaussian's footprint is a sliver on the silhouette whose photo colour belongs to its neighbours
    (the face), and those colours would be carried round to the back of the head.

    A Gaussian's scales may grow at most ``max_scale_growth`` times their initial value (no blobs), and
    those of the hidden inner surfaces (eyeballs, mouth cavity) stay under ``inner_max_scale`` metres:
    bigger discs there poke through the skin and show skin-coloured specks on the back of the head.
    Unseen Gaussians end opaque (``unseen_opacity``) and ``unseen_widen`` times wider, so that the unseen
    surface is closed and nothing behind it (the face, seen from behind) shows through.

    ``offset_bound (N,)``, ``slide_bound (N,)``: per-Gaussian bounds in metres on the normal offset and
    the slide (at most ``max_offset`` / ``max_slide``): :func:`avatar_jax.personalize.hair.offset_bounds`
    keeps the skin of the jaw and neck from growing fins.

    ``densify``: once, at that fraction of the steps, face and hand Gaussians with a large mean
    screen-space positional gradient are cloned or split (:mod:`avatar_jax.personalize.densify`); the
    returned cloud, ``seen`` and offsets then have the new size, ``added`` says how many were added."""
    target = jnp.asarray(photo * mask[..., None], jnp.float32)
    m = jnp.asarray(mask, jnp.float32)
    normals = normals_of(cloud)
    edges = jnp.asarray(graph.edges)
    edge_w = jnp.asarray(graph.weights)
    crop_target = crop_mask = None
    if crops is not None:
        crop_target = jnp.asarray(crops.photo * crops.mask[..., None])
        crop_mask = jnp.asarray(crops.mask)
        # A crop pixel covers 1/zoom^2 of a photo-camera pixel: weights in photo-camera pixels.
        zoom = np.asarray(crops.camera.K[:, 0, 0]) / float(camera.K[0, 0])

    def seen_weights(means, quats, scales, opacities, cap_main, cap_crop):
        w, c = visibility.visible_weights(means, quats, scales, opacities, camera, jnp.asarray(photo), m, cap_main)
        w_px = w
        if crops is not None:
            wb, cb = visibility.visible_weights(means, quats, scales, opacities, crops.camera,
                                                jnp.asarray(crops.photo), crop_mask, cap_crop)
            w, c = w + wb.sum(0), c + cb.sum(0)
            w_px = w_px + jnp.sum(wb / jnp.asarray(zoom**2, jnp.float32)[:, None], 0)
        # Weight alone lets the far side show through gaps of a thin cloud; a seen surface also faces us.
        normal = quaternion.to_matrix(quats)[:, :, 2]
        to_cam = camera.position - means
        facing = jnp.sum(normal * to_cam, -1) > min_facing * jnp.linalg.norm(to_cam, axis=-1)
        return np.asarray(jnp.where(facing, w_px, 0.0)), np.asarray(c / jnp.maximum(w, 1e-8)[:, None])

    inner = np.isin(np.asarray(cloud.part), (parts.EYES, parts.MOUTH))[:, None]
    log_hi = np.minimum(np.asarray(cloud.log_scales) + np.log(max_scale_growth), LOG_SCALE_RANGE[1])
    log_hi = jnp.asarray(np.where(inner, np.minimum(log_hi, np.log(inner_max_scale)), log_hi), jnp.float32)
    cloud = cloud.replace(log_scales=jnp.minimum(cloud.log_scales, log_hi))
    means0, quats0 = pose_cloud(cloud, skinning)
    scales0 = jnp.exp(cloud.log_scales)
    cap_main = _capacity(means0, quats0, scales0, camera)
    cap_crop = _capacity(means0, quats0, scales0, crops.camera) if crops is not None else 0
    weight0, color0 = seen_weights(means0, quats0, scales0, jax.nn.sigmoid(cloud.opacity_logits), cap_main, cap_crop)
    seen0 = weight0 > seen_pixels
    if sharp_init:
        # The photo pixel under each Gaussian's centre: sharper than the footprint average.
        uv, _ = camera.project(means0)
        ij = jnp.clip(uv.astype(jnp.int32), 0, jnp.array([camera.width - 1, camera.height - 1]))
        color0 = np.asarray(jnp.asarray(photo, jnp.float32)[ij[:, 1], ij[:, 0]])
    dc = jnp.where(jnp.asarray(seen0)[:, None], dc_from_rgb(jnp.asarray(color0)), cloud.sh[:, 0])
    cloud = cloud.replace(sh=cloud.sh.at[:, 0].set(dc))

    params = dict(offsets=jnp.zeros((cloud.num, 3), jnp.float32), log_scales=cloud.log_scales, dc=cloud.sh[:, 0],
                  opacity_logits=cloud.opacity_logits, dmeans=jnp.zeros((cloud.num, 3), jnp.float32))
    # Everything big is an argument, not a closed-over constant: XLA would otherwise constant-fold
    # the projection of 20k Gaussians at compile time (minutes).
    consts = dict(cloud=cloud, skinning=skinning, target=target, mask=m, camera=camera, normals=normals,
                  edges=edges, edge_w=edge_w, log_hi=log_hi)
    if crops is not None:
        consts.update(crop_camera=crops.camera, crop_target=crop_target, crop_mask=crop_mask)
    def per_gaussian(bound, top, name):
        bound = np.full(cloud.num, top, np.float32) if bound is None else np.asarray(bound, np.float32)
        if bound.shape != (cloud.num,):
            raise ValueError(f"{name} must have shape ({cloud.num},), got {bound.shape}")
        # tanh(d / bound) * bound: a floor, no division by zero.
        return jnp.asarray(np.clip(bound, 1e-4, top)[:, None])

    off_hi = per_gaussian(offset_bound, max_offset, "offset_bound")
    slide_hi = per_gaussian(slide_bound, max_slide, "slide_bound")
    consts.update(off_hi=off_hi, slide_hi=slide_hi)
    # Read when a function is traced: densification changes N, so the jitted step retraces and sees new ones.
    caps = dict(main=cap_main, crop=cap_crop)

    def offsets_of(o, n, hi, slide):
        """Raw ``(N,3)`` -> bounded offsets ``(N,3)``: normal part within ``hi (N,1)`` (max_offset or less),
        sliding within ``slide (N,1)``."""
        d = jnp.sum(o * n, -1, keepdims=True)
        t = o - d * n
        tn = jnp.sqrt(jnp.sum(t * t, -1, keepdims=True) + 1e-12)
        return hi * jnp.tanh(d / hi) * n + t * (slide * jnp.tanh(tn / slide) / tn)

    def posed(p, k):
        c = k["cloud"]
        off = offsets_of(p["offsets"], k["normals"], k["off_hi"], k["slide_hi"])
        means, quats = pose_cloud(c, k["skinning"], off)
        sh = c.sh.at[:, 0].set(p["dc"])
        log_s = jnp.minimum(jnp.maximum(p["log_scales"], LOG_SCALE_RANGE[0]), k["log_hi"])
        # dmeans is always zero: its gradient is the positional gradient that densification reads.
        return dict(means=means + p["dmeans"], quats=quats, scales=jnp.exp(log_s),
                    opacities=jax.nn.sigmoid(p["opacity_logits"]),
                    colors=sh if c.sh_degree > 0 else rgb_from_dc(p["dc"]))

    def render_main(p, k):
        return render(camera=k["camera"], background=(0.0, 0.0, 0.0), capacity=caps["main"], check_finite=False,
                      **posed(p, k))

    def loss_fn(p, k):
        g = posed(p, k)
        out = render(camera=k["camera"], background=(0.0, 0.0, 0.0), capacity=caps["main"], check_finite=False,
                     **g)
        loss = _views_loss(out, k["target"], k["mask"], dssim_weight, mask_weight)
        if crops is not None:
            oc = render(camera=k["crop_camera"], background=(0.0, 0.0, 0.0), capacity=caps["crop"],
                        check_finite=False, **g)
            loss = loss + crop_weight * jnp.mean(_views_loss(oc, k["crop_target"], k["crop_mask"], dssim_weight,
                                                             mask_weight))
        o = offsets_of(p["offsets"], k["normals"], k["off_hi"], k["slide_hi"])
        i, j = k["edges"][:, 0], k["edges"][:, 1]
        smooth = jnp.sum(k["edge_w"] * jnp.sum((o[i] - o[j]) ** 2, -1)) / o.shape[0]
        return loss + offset_prior * jnp.mean(jnp.sum(o**2, -1)) + smooth_prior * smooth

    # Colours move fast, geometry slowly (metres), opacities in logit units.
    labels = {key: key for key in params}
    opt = optax.multi_transform(
        {"offsets": optax.adam(lr * 0.02), "log_scales": optax.adam(lr * 0.5), "dc": optax.adam(lr * 5),
         "opacity_logits": optax.adam(lr * 5), "dmeans": optax.set_to_zero()}, labels)
    state = opt.init(params)

    @jax.jit
    def step(p, s, k):
        loss, g = jax.value_and_grad(loss_fn)(p, k)
        upd, s = opt.update(g, s, p)
        # Screen-space positional gradient (3DGS's densification signal), in photo-camera pixels:
        # the image-plane part of dL/dx_cam times dx_cam/du = z / fx.
        cam = k["camera"]
        means_cam = posed(p, k)["means"] @ cam.viewmat[:3, :3].T + cam.viewmat[:3, 3]
        g_cam = g["dmeans"] @ cam.viewmat[:3, :3].T
        screen = jnp.linalg.norm(g_cam[:, :2], axis=-1) * jnp.maximum(means_cam[:, 2], 0.0) / cam.K[0, 0]
        return optax.apply_updates(p, upd), s, loss, screen

    at = int(round(densify.at_fraction * steps)) if densify is not None else -1
    grad_sum = np.zeros(cloud.num)
    added = 0
    for i in range(steps):
        if i == at and i > 0:
            chosen = densify_lib.select(grad_sum / i, np.asarray(cloud.part), densify.fraction, densify.max_new)
            current = cloud.replace(log_scales=params["log_scales"], opacity_logits=params["opacity_logits"],
                                    sh=cloud.sh.at[:, 0].set(params["dc"]))
            cloud, parent = densify_lib.densify(current, chosen, densify)
            added = len(chosen)
            normals = normals_of(cloud)
            graph = surface_graph.build(np.asarray(cloud.means), np.asarray(normals), np.asarray(cloud.part),
                                        graph.face_region[parent])
            log_hi = log_hi[jnp.asarray(parent)]
            off_hi, slide_hi = off_hi[jnp.asarray(parent)], slide_hi[jnp.asarray(parent)]
            params = dict(offsets=params["offsets"][jnp.asarray(parent)], log_scales=cloud.log_scales,
                          dc=cloud.sh[:, 0], opacity_logits=cloud.opacity_logits,
                          dmeans=jnp.zeros((cloud.num, 3), jnp.float32))
            consts.update(cloud=cloud, normals=normals, edges=jnp.asarray(graph.edges),
                          edge_w=jnp.asarray(graph.weights), log_hi=log_hi, off_hi=off_hi, slide_hi=slide_hi)
            g0 = posed(params, consts)
            caps["main"] = _capacity(g0["means"], g0["quats"], g0["scales"], camera)
            if crops is not None:
                caps["crop"] = _capacity(g0["means"], g0["quats"], g0["scales"], crops.camera)
            state = opt.init(params)  # new Gaussians start with fresh moments (as in 3DGS)
        params, state, loss, screen = step(params, state, consts)
        if i < at:
            grad_sum += np.asarray(screen)
        if progress is not None:
            progress(i, float(loss))
    out = jax.jit(render_main)(params, consts)
    rgb, alpha = np.asarray(out.rgb), np.asarray(out.alpha)

    # Which Gaussians the fitted avatar really shows: only those keep their fitted colours.
    g = jax.jit(posed)(params, consts)
    weight, _ = seen_weights(g["means"], g["quats"], g["scales"], g["opacities"], caps["main"], caps["crop"])
    seen = weight > seen_pixels
    off = np.asarray(offsets_of(params["offsets"], normals, off_hi, slide_hi))
    fitted_rgb = np.asarray(rgb_from_dc(params["dc"]))
    # Colours outside [0,1] (a fit pushing a half-transparent edge) would shine through gaps elsewhere.
    filled = np.clip(appearance_fill.harmonic_fill(np.clip(fitted_rgb, 0, 1), seen, graph, np.asarray(cloud.part)),
                     0, 1)
    # The unseen surface must be closed: through gaps between its discs the far side shows (from behind,
    # the face through the back of the head). Nothing constrains those Gaussians and their filled colours
    # are smooth, so they are made opaque and a little wider (not the inner eyes and mouth).
    log_s = jnp.minimum(jnp.maximum(params["log_scales"], LOG_SCALE_RANGE[0]), log_hi)
    closing = jnp.asarray(~seen & ~np.isin(np.asarray(cloud.part), (parts.EYES, parts.MOUTH)))
    log_s = jnp.where(closing[:, None] & (jnp.arange(3) < 2),
                      jnp.minimum(log_s + np.log(unseen_widen), LOG_SCALE_RANGE[1]), log_s)
    opacity_logits = jnp.where(closing, jnp.maximum(params["opacity_logits"], _logit(unseen_opacity)),
                               params["opacity_logits"])
    fitted = cloud.replace(means=cloud.means + jnp.asarray(off), log_scales=log_s, opacity_logits=opacity_logits,
                           sh=cloud.sh.at[:, 0].set(dc_from_rgb(jnp.asarray(filled))))
    area = np.exp(np.asarray(cloud.log_scales[:, 0] + cloud.log_scales[:, 1]))  # disc area ~ s0 * s1
    crop_psnr = {}
    if crops is not None:
        oc = jax.jit(lambda p, k: render(camera=k["crop_camera"], background=(0.0, 0.0, 0.0), capacity=caps["crop"],
                                         check_finite=False, **posed(p, k)))(params, consts)
        for b, name in enumerate(crops.names):
            crop_psnr[name] = psnr_in_mask(np.asarray(oc.rgb[b]), crops.photo[b], crops.mask[b])
    return PhotoFit(fitted, rgb, alpha, psnr_in_mask(rgb, np.asarray(photo), np.asarray(mask)),
                    ssim_in_mask(rgb, np.asarray(photo), np.asarray(mask)), seen,
                    float((area * seen).sum() / area.sum()), off, np.sum(off * np.asarray(normals), -1), crop_psnr,
                    added)
