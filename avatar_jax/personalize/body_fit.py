"""Fit camera placement, body shape and pose of the template to 2D keypoints (JAX + optax).

The camera sits at the origin looking down +z (OpenCV), with a fixed pinhole ``K`` (a normal lens,
vertical field of view ``fov_y_deg``); what we fit is the body's root transform (rotation, translation),
its phenotype (6 numbers squashed into [0,1]) and axis-angle rotations of the joints that matter for a
photo (spine, neck, head, jaw, arms, hands, legs). Loss: a robust (Geman-McClure) reprojection error of
the 553 MediaPipe keypoints, each weighted by its confidence and by its group (pose / face / hands have
equal total weight), plus priors: small joint rotations, phenotype near average, and left/right
symmetric shoulders.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from avatar_jax.body import keypoints as kp
from avatar_jax.body import lbs, phenotype
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


def fit_body(template: BodyTemplate, points: np.ndarray, confidence: np.ndarray, width: int, height: int, *,
             fov_y_deg: float = 30.0, steps: int = 300, learning_rate: float = 0.02,
             pose_prior: float = 2e-3, shape_prior: float = 1e-3, progress=None) -> BodyFit:
    """Fit to ``points (553,2)`` pixels with ``confidence (553,)`` (0 = missing) in a ``width x height`` photo."""
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
        pheno = 0.5 + 0.5 * jnp.tanh(p["pheno"])
        pose = jnp.zeros((template.num_joints, 3)).at[free].set(p["pose"])
        root = se3.from_rotation_translation(se3.exp_so3(p["root_rot"]), p["trans"])
        return pheno, pose, root

    def project(p):
        pheno, pose, root = unpack(p)
        uv, z = cam.project(posed_keypoints(template, pheno, pose, root))
        return uv, z

    def loss_fn(p, sigma):
        uv, z = project(p)
        r2 = jnp.sum(((uv - target) / scale) ** 2, axis=-1)
        # Geman-McClure: residuals beyond ~sigma (a fraction of the image height) count less and less.
        sigma2 = sigma**2
        data = jnp.sum(weights * r2 / (r2 + sigma2)) * sigma2 / (0.05**2)
        prior = pose_prior * jnp.sum(stiff[:, None] * p["pose"] ** 2) + shape_prior * jnp.sum(p["pheno"] ** 2)
        sym = jnp.sum((p["pose"][il] * jnp.array([1, -1, -1]) - p["pose"][ir]) ** 2)  # mirrored clavicles
        behind = jnp.sum(jax.nn.relu(0.1 - z))
        return data + prior + 1e-3 * sym + behind

    def make_step(mask):
        opt = optax.adam(learning_rate)

        @jax.jit
        def step(p, state, sigma):
            loss, g = jax.value_and_grad(loss_fn)(p, sigma)
            g = jax.tree.map(lambda a, m: a * m, g, mask)
            upd, state = opt.update(g, state, p)
            return optax.apply_updates(p, upd), state, loss

        return opt, step

    # Stage 1: root only (rotation, translation), forgiving loss; stage 2: everything, sharper loss.
    root_mask = dict(root_rot=1.0, trans=1.0, pheno=0.0, pose=0.0)
    all_mask = dict(root_rot=1.0, trans=1.0, pheno=1.0, pose=1.0)
    for mask, n, sigma in ((root_mask, steps // 3, 0.3), (all_mask, steps - steps // 3, 0.05)):
        opt, step = make_step(mask)
        state = opt.init(params)
        for i in range(n):
            params, state, loss = step(params, state, jnp.float32(sigma))
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
    return BodyFit(np.asarray(pheno), np.asarray(pose), np.asarray(root), cam, uv, err,
                   float(err[judged].mean() / height) if judged.any() else float("nan"))
