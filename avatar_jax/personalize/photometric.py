"""Fit Gaussian colours, offsets, scales and opacities to the photo with the splat renderer.

The canonical Gaussians (on the fitted body in rest pose) are skinned into the photo's pose and
rendered from the photo's camera. Loss: ``L1 + λ·D-SSIM`` between the render (on black) and the photo
masked by MediaPipe's person segmentation, plus an alpha-vs-mask term so the silhouette covers the
person (clothes are bigger than the body), plus small priors: offsets stay near the surface and
smooth-ish (L2), scales stay bounded. Unseen Gaussians (back, hidden sides) get their colour from the
nearest seen Gaussian of the same body part, preferring the left/right mirror image (symmetry prior).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from avatar_jax.body import lbs, parts
from avatar_jax.gaussians.cloud import GaussianCloud, dc_from_rgb
from avatar_jax.geometry import camera as cam_lib
from avatar_jax.geometry import quaternion
from avatar_jax.render import intersection_count, render


@dataclasses.dataclass(frozen=True)
class PhotoFit:
    cloud: GaussianCloud  # canonical (rest pose) after fitting
    rgb: np.ndarray  # (H,W,3) render from the photo camera, on black
    alpha: np.ndarray  # (H,W)
    psnr_in_mask: float
    seen: np.ndarray  # (N,) bool: Gaussians the photo constrains


def _gauss_window(size: int = 11, sigma: float = 1.5) -> jax.Array:
    x = jnp.arange(size) - size // 2
    g = jnp.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean SSIM of two ``(H,W,3)`` images in [0,1] (11x11 Gaussian window, sigma 1.5)."""
    w = _gauss_window()

    def blur(x):  # separable, per channel, 'valid'
        x = jnp.moveaxis(x, -1, 0)[:, None]  # (3,1,H,W)
        x = jax.lax.conv_general_dilated(x, w[None, None, :, None], (1, 1), "VALID")
        x = jax.lax.conv_general_dilated(x, w[None, None, None, :], (1, 1), "VALID")
        return x[:, 0]

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean()


def psnr_in_mask(render_rgb: np.ndarray, photo: np.ndarray, mask: np.ndarray) -> float:
    m = mask > 0.5
    mse = float(np.mean((render_rgb[m] - photo[m]) ** 2))
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def pose_cloud(cloud: GaussianCloud, skinning: jax.Array, offsets: jax.Array | None = None):
    """Skin canonical Gaussians: returns posed ``means (N,3)`` and ``quats (N,4)``."""
    means = cloud.means if offsets is None else cloud.means + offsets
    posed, rot = lbs.skin_points(skinning, means, cloud.skin_joints, cloud.skin_weights)
    # Blended rotations are close to rotations; normalising the quaternion of the blend is enough here.
    q = quaternion.multiply(quaternion.from_matrix(rot), cloud.quats)
    return posed, q


def fit_photo(cloud: GaussianCloud, skinning: jax.Array, camera: cam_lib.Camera, photo: np.ndarray,
              mask: np.ndarray, *, steps: int = 100, lr: float = 0.01, dssim_weight: float = 0.2,
              mask_weight: float = 0.5, offset_prior: float = 1.0, progress=None) -> PhotoFit:
    """``photo (H,W,3)`` in [0,1] and ``mask (H,W)`` at the camera's resolution."""
    target = jnp.asarray(photo * mask[..., None], jnp.float32)
    m = jnp.asarray(mask, jnp.float32)
    # Colour init: sample the photo where each (front-facing, in-image) Gaussian projects.
    means0, quats0 = pose_cloud(cloud, skinning)
    uv, z = camera.project(means0)
    normal = quaternion.to_matrix(quats0)[:, :, 2]
    view = means0 - camera.position
    facing = jnp.abs(jnp.sum(normal * view, -1)) / jnp.linalg.norm(view, axis=-1) > 0.2
    w, h = camera.width, camera.height
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h) & (z > 0)
    ij = jnp.clip(uv.astype(jnp.int32), 0, jnp.array([w - 1, h - 1]))
    in_mask = m[ij[:, 1], ij[:, 0]] > 0.5
    # Depth test against the other Gaussians: the nearest few per pixel are "seen".
    pix = np.asarray(ij[:, 1] * w + ij[:, 0])
    zz = np.asarray(z)
    nearest = np.full(w * h, np.inf)
    np.minimum.at(nearest, pix, zz)
    seen = np.asarray(inside & in_mask & facing) & (zz < nearest[pix] + 0.05)
    sampled = jnp.asarray(photo, jnp.float32)[ij[:, 1], ij[:, 0]]
    dc = jnp.where(jnp.asarray(seen)[:, None], dc_from_rgb(sampled), cloud.sh[:, 0])
    cloud = cloud.replace(sh=cloud.sh.at[:, 0].set(dc))

    capacity = 1 << int(2.0 * intersection_count(means0, quats0, jnp.exp(cloud.log_scales) * 1.5, camera)).bit_length()
    params = dict(offsets=jnp.zeros_like(cloud.means), log_scales=cloud.log_scales, dc=cloud.sh[:, 0],
                  opacity_logits=cloud.opacity_logits)

    consts = dict(cloud=cloud, skinning=skinning, target=target, mask=m, camera=camera)

    # Everything big is an argument, not a closed-over constant: XLA would otherwise constant-fold
    # the projection of 20k Gaussians at compile time (minutes).
    def render_params(p, k):
        cloud, camera = k["cloud"], k["camera"]
        c = cloud.replace(log_scales=jnp.clip(p["log_scales"], -9.0, -2.5), opacity_logits=p["opacity_logits"],
                          sh=cloud.sh.at[:, 0].set(p["dc"]))
        means, quats = pose_cloud(c, k["skinning"], p["offsets"])
        args = c.render_args()
        args.update(means=means, quats=quats)
        return render(camera=camera, background=(0.0, 0.0, 0.0), capacity=capacity, check_finite=False, **args)

    def loss_fn(p, k):
        out = render_params(p, k)
        l1 = jnp.mean(jnp.abs(out.rgb - k["target"]))
        d_ssim = 1.0 - ssim(out.rgb, k["target"])
        sil = jnp.mean(jnp.abs(out.alpha - k["mask"]))
        prior = offset_prior * jnp.mean(jnp.sum(p["offsets"] ** 2, -1))
        return (1 - dssim_weight) * l1 + dssim_weight * d_ssim + mask_weight * sil + prior

    # Colours move fast, geometry slowly (metres), opacities in logit units.
    opt = optax.multi_transform(
        {"offsets": optax.adam(lr * 0.02), "log_scales": optax.adam(lr * 0.5), "dc": optax.adam(lr * 5),
         "opacity_logits": optax.adam(lr * 5)},
        {"offsets": "offsets", "log_scales": "log_scales", "dc": "dc", "opacity_logits": "opacity_logits"})
    state = opt.init(params)

    @jax.jit
    def step(p, s, k):
        loss, g = jax.value_and_grad(loss_fn)(p, k)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, loss

    for i in range(steps):
        params, state, loss = step(params, state, consts)
        if progress is not None:
            progress(i, float(loss))
    out = jax.jit(render_params)(params, consts)
    rgb, alpha = np.asarray(out.rgb), np.asarray(out.alpha)
    fitted = cloud.replace(means=cloud.means + params["offsets"], log_scales=jnp.clip(params["log_scales"], -9.0, -2.5),
                           opacity_logits=params["opacity_logits"], sh=cloud.sh.at[:, 0].set(params["dc"]))
    fitted = fill_unseen(fitted, seen)
    return PhotoFit(fitted, rgb, alpha, psnr_in_mask(rgb, np.asarray(photo), np.asarray(mask)), seen)


def fill_unseen(cloud: GaussianCloud, seen: np.ndarray) -> GaussianCloud:
    """Colour each unseen Gaussian like the nearest seen one of its part, searching at its left/right
    mirror image first (bodies are nearly symmetric), then at its own position (smooth continuation)."""
    means = np.asarray(cloud.means)
    part = np.asarray(cloud.part)
    dc = np.asarray(cloud.sh[:, 0]).copy()
    seen_idx = np.nonzero(seen)[0]
    if seen_idx.size == 0:
        return cloud
    unseen = np.nonzero(~seen)[0]
    mirror = means * np.array([-1.0, 1.0, 1.0])
    swap = {parts.HAND_L: parts.HAND_R, parts.HAND_R: parts.HAND_L}
    mirrored_part = np.array([swap.get(int(p), int(p)) for p in part])
    for chunk in np.array_split(unseen, max(1, len(unseen) // 2048)):
        d_mirror = np.linalg.norm(mirror[chunk, None] - means[None, seen_idx], axis=-1)
        d_self = np.linalg.norm(means[chunk, None, :2] - means[None, seen_idx, :2], axis=-1)
        other_part = part[chunk, None] != part[None, seen_idx]
        d_mirror = np.where(mirrored_part[chunk, None] != part[None, seen_idx], np.inf, d_mirror)
        d_self = np.where(other_part, np.inf, d_self)
        best_m, best_s = d_mirror.argmin(1), d_self.argmin(1)
        use_mirror = d_mirror[np.arange(len(chunk)), best_m] < 0.03
        src = np.where(use_mirror, seen_idx[best_m], seen_idx[best_s])
        ok = np.isfinite(np.minimum(d_mirror.min(1), d_self.min(1)))
        dc[chunk[ok]] = dc[src[ok]]
    return cloud.replace(sh=cloud.sh.at[:, 0].set(jnp.asarray(dc)))
