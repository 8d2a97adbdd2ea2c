"""Fit camera placement, body shape and pose of the template to 2D keypoints (JAX + optax).

The camera sits at the origin looking down +z (OpenCV), with a fixed pinhole ``K`` (a normal lens,
vertical field of view ``fov_y_deg``); what we fit is the body's root transform (rotation, translation),
its phenotype (6 numbers squashed into [0,1]) and axis-angle rotations of the joints that matter for a
photo (spine, neck, head, jaw, arms, hands, legs). Loss: a robust (Geman-McClure) reprojection error of
the 553 MediaPipe keypoints, each weighted by its confidence and by its group (pose / face / hands have
equal total weight), plus priors: small joint rotations, phenotype near average, and left/right
symmetric shoulders.

With the person's ``mask``, the body shape also follows the silhouette (keypoints say little about
girth): every body vertex that projects into the photo should fall inside the mask (squared distance
to it, from a distance transform, sampled bilinearly), and every point of the mask's outline (away
from the photo's border, where the person is cut off) should have a body vertex near it (robust, so
that loose clothes and hair, which the photometric fit's normal offsets take, pull only a little).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import ndimage

from avatar_jax.body import keypoints as kp
from avatar_jax.body import lbs, parts, phenotype
from avatar_jax.body.template import BodyTemplate
from avatar_jax.geometry import camera as cam_lib
from avatar_jax.geometry import se3

# Joints the fit may rotate; prior weight multiplier (bigger = stiffer).
FREE_JOINTS = {
    "spine05": 4.0, "spine04": 4.0, "spine03": 4.0, "spine02": 4.0, "spine01": 4.0,
    "neck01": 2.0, "neck02": 2.0, "neck03": 2.0, "head": 1.0, "jaw": 2.0,
    "clavicle.L": 4.0, "clavicle.R": 4.0, "upperarm01.L": 0.5, "upperarm01.R": 0.5,
    "lowerarm01.L": 0.5, "lowerarm01.R": 0.5, "wrist.L": 1.0, "wrist.R": 1.0,
    "upperleg01.L": 1.0, "upperleg01.R": 1.0, "lowerleg01.L": 1.0, "lowerleg01.R": 1.0,
}
# Phenotype = 0.5 + 0.5 tanh(PHENO_GAIN * raw): Adam moves raw by ~lr a step, and a heavy or slim body
# (0.9 and beyond) must be reachable within the second stage's steps.
PHENO_GAIN = 2.5


@dataclasses.dataclass(frozen=True)
class BodyFit:
    """Result: ``phenotype (6,)``, ``pose (J,3)``, ``root (4,4)``, ``camera``, projected ``keypoints (553,2)``,
    per-keypoint pixel error ``errors (553,)`` and the mean error over confident body+face keypoints as a
    fraction of the image height ``error_fraction``."""

    phenotype: np.ndarray
    pose: np.ndarray
    root: np.ndarray
    camera: cam_lib.Camera
    keypoints: np.ndarray
    errors: np.ndarray
    error_fraction: float
    silhouette_iou: float = float("nan")


def photo_camera(width: int, height: int, fov_y_deg: float) -> cam_lib.Camera:
    return cam_lib.Camera(jnp.eye(4), jnp.asarray(cam_lib.intrinsics(width, height, fov_y_deg)), width, height)


def _group_weights(confidence: np.ndarray) -> np.ndarray:
    w = np.zeros_like(confidence)
    for sl in (kp.POSE, kp.FACE, kp.LEFT_HAND, kp.RIGHT_HAND):
        c = confidence[sl]
        if c.sum() > 0:
            w[sl] = c / max(c.sum(), 1e-6) * (sl.stop - sl.start) ** 0.5
    # The face mesh outline (jaw line) is less reliable on a different face shape than interior points.
    return (w / max(w.sum(), 1e-6)).astype(np.float32)


def posed_keypoints(template: BodyTemplate, pheno: jax.Array, pose: jax.Array, root: jax.Array) -> jax.Array:
    """World keypoints ``(553,3)`` of the posed body."""
    verts, joints = phenotype.shaped_rest(template, pheno)
    _, skinning = lbs.forward_kinematics(template, joints, pose, root)
    idx = jnp.asarray(template.keypoint_vertices)
    flat = idx.reshape(-1)
    sk_idx = jnp.asarray(template.skin_indices)[flat]
    sk_w = jnp.asarray(template.skin_weights)[flat]
    pts, _ = lbs.skin_points(skinning, verts[flat], sk_idx, sk_w)
    return jnp.einsum("pm,pmc->pc", jnp.asarray(template.keypoint_weights), pts.reshape(*idx.shape, 3))


def _initial_translation(points: np.ndarray, conf: np.ndarray, template: BodyTemplate, cam) -> np.ndarray:
    """Depth from the shoulder width (or the eye distance), centre from the visible points."""
    f = float(cam.K[1, 1])
    rest = kp.regress(template.reference_vertices, template.keypoint_vertices, template.keypoint_weights)
    pairs = [(kp.POSE_NAMES.index("left_shoulder"), kp.POSE_NAMES.index("right_shoulder")),
             (kp.POSE_NAMES.index("left_eye_outer"), kp.POSE_NAMES.index("right_eye_outer"))]
    depth = 2.5
    for a, b in pairs:
        if conf[a] > 0.5 and conf[b] > 0.5:
            depth = f * np.linalg.norm(rest[a] - rest[b]) / max(np.linalg.norm(points[a] - points[b]), 1.0)
            break
    seen = conf > 0.5
    anchor = np.nonzero(seen)[0]
    c2d = points[anchor].mean(0)
    c3d = rest[anchor].mean(0)
    x = (c2d[0] - float(cam.K[0, 2])) * depth / f
    y = (c2d[1] - float(cam.K[1, 2])) * depth / f
    # World y is up and the camera's y is down; the body faces -z, towards the camera: a rotation by pi
    # about z makes it upright in view, facing us, its left on the image's right.
    flip = np.diag([-1.0, -1.0, 1.0])
    return np.array([x, y, depth]) - flip @ c3d


def silhouette_targets(mask: np.ndarray, size: int = 128, outline_points: int = 600, seed: int = 0):
    """From ``mask (H,W)``: distance outside the mask ``(h,w)`` in units of the image height at a working
    size (long side ``size``), that grid's scale (working px per photo px), and up to ``outline_points``
    outline points ``(P,2)`` in photo pixels (not on the photo's border)."""
    h, w = mask.shape
    s = size / max(h, w)
    hh, ww = max(2, round(h * s)), max(2, round(w * s))
    small = np.asarray(jax.image.resize(jnp.asarray(mask, jnp.float32), (hh, ww), "linear")) > 0.5
    dist = ndimage.distance_transform_edt(~small) / hh
    inner = small & ~ndimage.binary_erosion(small)
    inner[:2], inner[-2:], inner[:, :2], inner[:, -2:] = False, False, False, False
    ij = np.argwhere(inner)
    if len(ij) > outline_points:
        ij = ij[np.random.default_rng(seed).choice(len(ij), outline_points, replace=False)]
    outline = (ij[:, ::-1] + 0.5) / s
    return dist.astype(np.float32), s, outline.astype(np.float32)


def _bilinear(grid: jax.Array, uv: jax.Array) -> jax.Array:
    """Sample ``grid (h,w)`` at continuous pixel positions ``uv (P,2)`` (x, y; centres at +0.5), edge-clamped."""
    h, w = grid.shape
    x = jnp.clip(uv[:, 0] - 0.5, 0, w - 1)
    y = jnp.clip(uv[:, 1] - 0.5, 0, h - 1)
    x0, y0 = jnp.floor(x).astype(jnp.int32), jnp.floor(y).astype(jnp.int32)
    x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x1] * fx
    bot = grid[y1, x0] * (1 - fx) + grid[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def silhouette_iou(uv: np.ndarray, mask: np.ndarray, scale: float = 1.0) -> float:
    """IoU between the mask ``(H,W)`` and the pixels hit by projected body points ``uv (P,2)``, closed
    morphologically (a dense vertex cloud's footprint stands in for the rasterised mesh)."""
    h, w = mask.shape
    hit = np.zeros((h, w), bool)
    ij = np.floor(uv[:, ::-1] * scale).astype(int)
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < h) & (ij[:, 1] >= 0) & (ij[:, 1] < w)
    hit[ij[ok, 0], ij[ok, 1]] = True
    hit = ndimage.binary_closing(hit) | hit
    m = mask > 0.5
    return float((hit & m).sum() / max((hit | m).sum(), 1))


def fit_body(template: BodyTemplate, points: np.ndarray, confidence: np.ndarray, width: int, height: int, *,
             fov_y_deg: float = 30.0, steps: int = 300, learning_rate: float = 0.02,
             pose_prior: float = 2e-3, shape_prior: float = 1e-3, mask: np.ndarray | None = None,
             silhouette_weight: float = 1.0, silhouette_vertices: int = 3000, progress=None) -> BodyFit:
    """Fit to ``points (553,2)`` pixels with ``confidence (553,)`` (0 = missing) in a ``width x height`` photo,
    and to the person's ``mask (H,W)`` if given (``silhouette_weight`` 0 turns that off)."""
    cam = photo_camera(width, height, fov_y_deg)
    free = np.array([template.joint(n) for n in FREE_JOINTS])
    stiff = jnp.asarray([FREE_JOINTS[n] for n in FREE_JOINTS], jnp.float32)
    weights = jnp.asarray(_group_weights(confidence))
    target = jnp.asarray(points, jnp.float32)
    scale = float(height)
    trans0 = _initial_translation(points, confidence, template, cam)
    params = dict(root_rot=jnp.array([0.0, 0.0, np.pi], jnp.float32), trans=jnp.asarray(trans0, jnp.float32),
                  pheno=jnp.zeros(6, jnp.float32), pose=jnp.zeros((len(free), 3), jnp.float32))
    sl, sr = template.joint("clavicle.L"), template.joint("clavicle.R")
    il, ir = int(np.nonzero(free == sl)[0][0]), int(np.nonzero(free == sr)[0][0])

    def unpack(p):
        pheno = 0.5 + 0.5 * jnp.tanh(PHENO_GAIN * p["pheno"])
        pose = jnp.zeros((template.num_joints, 3)).at[free].set(p["pose"])
        root = se3.from_rotation_translation(se3.exp_so3(p["root_rot"]), p["trans"])
        return pheno, pose, root

    def project(p):
        pheno, pose, root = unpack(p)
        uv, z = cam.project(posed_keypoints(template, pheno, pose, root))
        return uv, z

    use_sil = mask is not None and silhouette_weight > 0
    if use_sil:
        if mask.shape != (height, width):
            raise ValueError(f"mask shape {mask.shape} does not match the photo's {height}x{width}")
        dist, grid_scale, outline = silhouette_targets(mask)
        dist, outline = jnp.asarray(dist), jnp.asarray(outline)
        # The outer surface only: the eyeballs and the mouth cavity are inside the head anyway.
        outer = np.nonzero(~np.isin(template.part_labels, (parts.EYES, parts.MOUTH)))[0]
        sil_idx = outer[np.linspace(0, len(outer) - 1, min(silhouette_vertices, len(outer))).astype(int)]
        sil_idx_j = jnp.asarray(sil_idx)
        sil_sk = (jnp.asarray(template.skin_indices[sil_idx]), jnp.asarray(template.skin_weights[sil_idx]))

    def project_vertices(p, idx=None, sk=None):
        """Projected ``(P,2)`` silhouette vertices (or the vertices ``idx`` with skinning ``sk``)."""
        pheno, pose, root = unpack(p)
        verts, joints = phenotype.shaped_rest(template, pheno)
        _, skinning = lbs.forward_kinematics(template, joints, pose, root)
        idx, sk = (sil_idx_j, sil_sk) if idx is None else (idx, sk)
        pts, _ = lbs.skin_points(skinning, verts[idx], *sk)
        return cam.project(pts)[0]

    def silhouette_loss(p):
        uv = project_vertices(p)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
        # Both robust (Geman-McClure, like the keypoints): a mask that misses an arm behind an object, or a
        # coat far wider than the body, must not drag the pose away from the keypoints.
        sigma2 = 0.02**2
        d_out = _bilinear(dist, uv * grid_scale) ** 2
        out_term = jnp.sum(jnp.where(inside, d_out / (d_out + sigma2), 0.0)) / jnp.maximum(inside.sum(), 1)
        d2 = jnp.min(jnp.sum((outline[:, None] - uv[None]) ** 2, -1), axis=1) / scale**2
        cover = jnp.mean(d2 / (d2 + sigma2))
        return (out_term + 0.5 * cover) * sigma2 / 0.05**2

    def loss_fn(p, sigma, sil_on):
        uv, z = project(p)
        r2 = jnp.sum(((uv - target) / scale) ** 2, axis=-1)
        # Geman-McClure: residuals beyond ~sigma (a fraction of the image height) count less and less.
        sigma2 = sigma**2
        data = jnp.sum(weights * r2 / (r2 + sigma2)) * sigma2 / (0.05**2)
        prior = pose_prior * jnp.sum(stiff[:, None] * p["pose"] ** 2) + shape_prior * jnp.sum(p["pheno"] ** 2)
        sym = jnp.sum((p["pose"][il] * jnp.array([1, -1, -1]) - p["pose"][ir]) ** 2)  # mirrored clavicles
        behind = jnp.sum(jax.nn.relu(0.1 - z))
        total = data + prior + 1e-3 * sym + behind
        if use_sil:
            total = total + sil_on * silhouette_weight * silhouette_loss(p)
        return total

    def make_step(mask):
        opt = optax.adam(learning_rate)

        @jax.jit
        def step(p, state, sigma, sil_on):
            loss, g = jax.value_and_grad(loss_fn)(p, sigma, sil_on)
            g = jax.tree.map(lambda a, m: a * m, g, mask)
            upd, state = opt.update(g, state, p)
            return optax.apply_updates(p, upd), state, loss

        return opt, step

    # Stage 1: root only (rotation, translation), forgiving loss; stage 2: everything, sharper loss.
    root_mask = dict(root_rot=1.0, trans=1.0, pheno=0.0, pose=0.0)
    all_mask = dict(root_rot=1.0, trans=1.0, pheno=1.0, pose=1.0)
    # The silhouette joins in stage 2, once the root puts the body roughly over the person.
    for free_mask, n, sigma, sil_on in ((root_mask, steps // 3, 0.3, 0.0), (all_mask, steps - steps // 3, 0.05, 1.0)):
        opt, step = make_step(free_mask)
        state = opt.init(params)
        for i in range(n):
            params, state, loss = step(params, state, jnp.float32(sigma), jnp.float32(sil_on))
            if progress is not None and i % 25 == 0:
                progress(i, float(loss))
    uv, _ = jax.jit(project)(params)
    uv = np.asarray(uv)
    err = np.linalg.norm(uv - points, axis=1)
    judged = np.zeros(kp.NUM_KEYPOINTS, bool)
    judged[kp.POSE] = True
    judged[kp.FACE] = True
    judged &= confidence > 0.5
    pheno, pose, root = unpack(params)
    iou = float("nan")
    if use_sil:
        # Every outer vertex (the mesh is far denser than the working grid) for the reported overlap.
        every = (jnp.asarray(outer), (jnp.asarray(template.skin_indices[outer]),
                                      jnp.asarray(template.skin_weights[outer])))
        iou = silhouette_iou(np.asarray(jax.jit(project_vertices)(params, *every)) * grid_scale,
                             np.asarray(jax.image.resize(jnp.asarray(mask, jnp.float32), dist.shape, "linear")))
    return BodyFit(np.asarray(pheno), np.asarray(pose), np.asarray(root), cam, uv, err,
                   float(err[judged].mean() / height) if judged.any() else float("nan"), iou)
