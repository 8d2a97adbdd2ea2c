"""Synthetic subjects for the reconstruction tests: the template with a known texture, posed and rendered.

The texture: skin head and hands, brown hair on the top and back of the head, dark eyes, red lips, a
shirt with fine horizontal stripes (high-frequency detail on front and back), dark trousers and shoes.
``hand_colour`` overrides the hands' colour (a vivid green in the occlusion test).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from avatar_jax.body import lbs, parts
from avatar_jax.body.template import BodyTemplate
from avatar_jax.gaussians.cloud import dc_from_rgb
from avatar_jax.geometry import camera as cam_lib
from avatar_jax.personalize import photometric
from avatar_jax.render import render

SKIN = (0.87, 0.67, 0.55)
HAIR = (0.30, 0.18, 0.08)
SHIRT = ((0.15, 0.30, 0.75), (0.92, 0.92, 0.95))
TROUSERS = (0.18, 0.18, 0.22)
GREEN = (0.05, 0.85, 0.10)


def texture(means: np.ndarray, part: np.ndarray, head_top: float, hand_colour=SKIN) -> np.ndarray:
    """``(N,3)`` RGB for canonical ``means (N,3)`` (body facing -z) with part ids ``part (N,)``."""
    x, y, z = means.T
    out = np.empty((len(means), 3), np.float32)
    stripe = (np.floor(y / 0.03) % 2).astype(int)
    out[:] = np.asarray(SHIRT, np.float32)[stripe]
    out[y < 0.0] = TROUSERS
    out[part == parts.FEET] = (0.05, 0.05, 0.05)
    head = np.isin(part, parts.FACE_PARTS)
    out[head] = SKIN
    # Hair: the back half of the head and its top.
    out[head & ((z > -0.08) | (y > head_top - 0.06))] = HAIR
    out[part == parts.EYES] = (0.05, 0.05, 0.05)
    out[part == parts.MOUTH] = (0.75, 0.10, 0.15)
    out[np.isin(part, parts.HAND_PARTS)] = hand_colour
    return out


def hand_on_chest_pose(template: BodyTemplate, joints: jax.Array, target=(0.0, 0.28, -0.24)) -> np.ndarray:
    """A pose ``(J,3)`` whose right hand is in front of the chest (right arm joints fitted to ``target``)."""
    free = [template.joint(n) for n in ("upperarm01.R", "lowerarm01.R")]
    hand = np.nonzero(template.part_labels == parts.HAND_R)[0]
    verts = jnp.asarray(template.reference_vertices)[hand]

    def loss(p):
        pose = jnp.zeros((template.num_joints, 3)).at[jnp.asarray(free)].set(p)
        _, sk = lbs.forward_kinematics(template, joints, pose, jnp.eye(4))
        pts, _ = lbs.skin_points(sk, verts, jnp.asarray(template.skin_indices[hand]),
                                 jnp.asarray(template.skin_weights[hand]))
        return jnp.sum((pts.mean(0) - jnp.asarray(target)) ** 2)

    opt = optax.adam(0.05)
    p = jnp.zeros((2, 3))
    s = opt.init(p)
    step = jax.jit(lambda p, s: (lambda lg: (lg, *opt.update(lg[1], s, p)))(jax.value_and_grad(loss)(p)))
    for _ in range(300):
        (value, _), upd, s = step(p, s)
        p = optax.apply_updates(p, upd)
    pose = np.zeros((template.num_joints, 3), np.float32)
    pose[free] = np.asarray(p)
    return pose


def front_camera(width: int, height: int, centre=(0.0, 0.0, 0.0), distance: float = 4.0, fov_y_deg: float = 30.0):
    """A camera ``distance`` metres in front of ``centre`` (on -z), looking at it."""
    eye = (centre[0], centre[1], centre[2] - distance)
    return cam_lib.look_at(eye, centre, width=width, height=height, fov_y_deg=fov_y_deg)


def render_subject(cloud, rgb: np.ndarray, skinning, camera, background=(0.0, 0.0, 0.0)):
    """Render the canonical ``cloud`` with colours ``rgb (N,3)`` posed by ``skinning``: ``(rgb, alpha)``."""
    means, quats = photometric.pose_cloud(cloud, skinning)
    c = cloud.replace(sh=cloud.sh.at[:, 0].set(dc_from_rgb(jnp.asarray(rgb))))
    args = c.render_args()
    args.update(means=means, quats=quats)
    out = render(camera=camera, background=background, **args)
    return np.clip(np.asarray(out.rgb), 0, 1), np.asarray(out.alpha)
