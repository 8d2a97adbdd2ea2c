"""The pose-driven baseline (paper Table 2's "audio -> pose -> LBS" family) in the same framework.

    audio ──► driving tokens (same encoder + fusion) ──► temporal pose net ──► joint rotations (T,J,3)
          ──► template LBS (root, neck, jaw, left and right shoulder) ──► per-frame Gaussians

No particles, no Gaussian head, no residuals: every Gaussian moves rigidly with its blend of five
template joints, so the mouth can only open by rotating the jaw and hands only swing with their arm.
That is the bottleneck the audio-driven model is meant to remove, trained with the same losses, data
and step budget (``model.kind=pose_driven`` in ``avatar-jax train``).

The template is fitted to the canonical avatar once, in numpy (:func:`talking_template`), the way a
body fit would give it: root, neck and shoulders from the body parts
(:func:`avatar_jax.model.canonical.upper_body_template`) plus a jaw joint whose region is the lower
face below the mouth (the mouth from the avatar's face landmarks when it has them).

The pose net sees a causal window of ``model.pose_window`` driving tokens per frame (a temporal
convolution of that width, then a hidden layer); its output layer starts at zero, so a fresh baseline
holds the rest pose. Poses are predicted per frame, never integrated: the baseline cannot drift.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avatar_jax.errors import ConfigError
from avatar_jax.geometry import se3
from avatar_jax.model import body_skinning, skinning
from avatar_jax.model.avatar import Carry, FrameGaussians
from avatar_jax.model.canonical import PART_FACE, CanonicalAvatar, upper_body_template
from avatar_jax.model.driving import DrivingEncoder

JOINTS = ("root", "neck", "jaw", "left_shoulder", "right_shoulder")
PARENTS = np.array([-1, 0, 1, 0, 0], np.int32)
ROOT, NECK, JAW, SHOULDER_L, SHOULDER_R = range(len(JOINTS))
MODEL_KINDS = ("audio_driven", "pose_driven")
# Face-mesh rows (MediaPipe 478) in the template landmark order (pose 33 first): inner lips, mouth corners.
_UPPER_LIP, _LOWER_LIP, _CORNER_L, _CORNER_R = (33 + i for i in (13, 14, 61, 291))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50.0, 50.0)))


def talking_template(means: np.ndarray, part: np.ndarray, landmarks: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The baseline's 5-joint template fitted to a part-labelled avatar (subject facing -z, y up).

    ``means (N,3)``, ``part (N,)``, optional rest landmarks ``(553,3)`` in template order (NaN rows:
    undefined) -> ``pivots (5,3)``, ``parents (5,)``, ``index (N,5)``, ``weight (N,5)`` (rows sum to 1).
    The jaw takes the face Gaussians below the mouth line and in front of the face's centre, blended
    over 15 % of the mouth width; its pivot sits above and behind the mouth, as a jaw hinge does.
    """
    means, part = np.asarray(means, np.float64), np.asarray(part)
    if means.ndim != 2 or means.shape[1] != 3 or part.shape != means.shape[:1]:
        raise ValueError(f"talking_template needs means (N,3) and part (N,), got {means.shape} and {part.shape}")
    face = means[part == PART_FACE]
    if len(face) < 4:
        raise ValueError(f"the avatar has {len(face)} face Gaussians; the jaw joint needs at least 4")
    base_pivots, _, _, base_w = upper_body_template(means, part)
    lo, hi = np.percentile(face, 1, axis=0), np.percentile(face, 99, axis=0)
    c, r = 0.5 * (lo + hi), 0.5 * (hi - lo)
    mouth = None
    if landmarks is not None:
        lm = np.asarray(landmarks, np.float64)
        rows = lm[[_UPPER_LIP, _LOWER_LIP, _CORNER_L, _CORNER_R]] if lm.shape[0] > _CORNER_R else None
        # undefined landmark rows (zeros) lie off the face: then the face's proportions place the mouth
        inside = rows is not None and np.isfinite(rows).all() and bool(
            np.all((rows[:, :2] >= lo[:2] - r[:2]) & (rows[:, :2] <= hi[:2] + r[:2])))
        if inside:
            mouth = (0.5 * (rows[0] + rows[1]), float(np.abs(rows[3, 0] - rows[2, 0])))
    if mouth is None:  # proportions of a face: the mouth line ~40 % of the half-height below the centre
        mouth = (np.array([c[0], c[1] - 0.38 * r[1], lo[2]]), 0.6 * float(r[0]))
    (mx, my, _), width = mouth
    soft = max(0.15 * width, 1e-4)
    jaw = np.where(part == PART_FACE, _sigmoid((my - means[:, 1]) / soft) * _sigmoid((c[2] - means[:, 2]) / soft),
                   0.0)
    head = base_w[:, 1].astype(np.float64)
    w = np.zeros((len(means), len(JOINTS)))
    w[:, ROOT] = base_w[:, 0]
    w[:, NECK], w[:, JAW] = head * (1.0 - jaw), head * jaw
    w[:, SHOULDER_L], w[:, SHOULDER_R] = base_w[:, 2], base_w[:, 3]
    w /= w.sum(1, keepdims=True)
    jaw_pivot = np.array([mx, my + 0.25 * r[1], c[2] + 0.2 * r[2]])
    pivots = np.stack([base_pivots[0], base_pivots[1], jaw_pivot, base_pivots[2], base_pivots[3]])
    index = np.broadcast_to(np.arange(len(JOINTS), dtype=np.int32), w.shape).copy()
    return pivots.astype(np.float32), PARENTS.copy(), index, w.astype(np.float32)


def with_talking_template(avatar: CanonicalAvatar, landmarks: np.ndarray | None = None) -> CanonicalAvatar:
    """``avatar`` carrying :func:`talking_template` as its joint template (what the baseline skins with)."""
    pivots, parents, index, weight = talking_template(np.asarray(avatar.means), np.asarray(avatar.part), landmarks)
    return dataclasses.replace(avatar, joint_pivots=jnp.asarray(pivots), joint_parents=jnp.asarray(parents),
                               joint_index=jnp.asarray(index), joint_weight=jnp.asarray(weight))


def model_kind(model_config) -> str:
    """``model.kind`` (default ``audio_driven``), checked."""
    kind = str(model_config.get("kind", "audio_driven"))
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    return kind


class PoseDrivenAvatar(nnx.Module):
    """Driving tokens ``(T,d)`` -> joint rotations of the template -> template LBS of every Gaussian.

    Same interface as :class:`avatar_jax.model.avatar.AudioDrivenAvatar` (``init_carry``, ``__call__``
    with a :class:`Carry`), so the train step, evaluation and streaming treat both alike.
    """

    def __init__(self, model_config, rngs: nnx.Rngs):
        c = model_config
        self.d_model = c.d_model
        self.window = int(c.get("pose_window", 8))
        if self.window < 1:
            raise ConfigError(f"model.pose_window must be >= 1, got {self.window}")
        self.pose_net = body_skinning.BodyMotionHead(
            c.d_model, self.window, len(JOINTS), rngs, max_rotation=c.get("max_joint_rotation", 0.6),
            output_scale=c.get("joint_scale", 0.1))

    def init_carry(self, avatar: CanonicalAvatar, transforms: jax.Array | None = None,
                   frame: int | jax.Array = 0) -> Carry:
        """Empty token window before frame ``frame``; ``transforms`` (particles) pass through unused."""
        w = self.window - 1
        if transforms is None:
            transforms = se3.identity((avatar.num_particles,))
        return Carry(transforms=jnp.asarray(transforms, jnp.float32), window=jnp.zeros((w, self.d_model), jnp.float32),
                     valid=jnp.zeros((w,), bool), frame=jnp.asarray(frame, jnp.int32))

    def rotations(self, driving: jax.Array, carry: Carry) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(T,J,3)`` axis-angle joint rotations, and the token history and validity for the next carry."""
        t = driving.shape[0]
        history = jnp.concatenate([carry.window.astype(driving.dtype), driving], axis=0)  # (w-1+T, d)
        valid = jnp.concatenate([carry.valid, jnp.ones((t,), bool)])
        idx = jnp.arange(t)[:, None] + jnp.arange(self.window)[None, :]  # (T, w): frames t-w+1..t
        return self.pose_net(history[idx], valid[idx]), history, valid

    def __call__(self, avatar: CanonicalAvatar, driving: jax.Array, carry: Carry | None = None
                 ) -> tuple[FrameGaussians, Carry]:
        """``driving (T, d_model)`` -> per-frame Gaussians ``(T, N, ...)`` and the carry after frame T-1."""
        avatar.check()
        if driving.ndim != 2 or driving.shape[-1] != self.d_model:
            raise ValueError(f"driving tokens must be (T, {self.d_model}), got {driving.shape}")
        if avatar.joint_pivots is None or avatar.joint_pivots.shape[0] != len(JOINTS):
            got = 0 if avatar.joint_pivots is None else avatar.joint_pivots.shape[0]
            raise ValueError(f"the pose-driven baseline needs the avatar's {len(JOINTS)}-joint talking template "
                             f"({', '.join(JOINTS)}; pose_driven.with_talking_template), got {got} joints")
        carry = self.init_carry(avatar) if carry is None else carry
        t = driving.shape[0]
        rot, history, valid = self.rotations(driving.astype(jnp.float32), carry)
        pivots, parents, j_index, j_weight = avatar.template()
        world = body_skinning.joint_transforms(rot, pivots, parents)  # (T, J, 4, 4)
        motion = body_skinning.blend_joints(world, j_index, j_weight)  # (T, N, 4, 4)
        means, quats = skinning.apply_to_gaussians(motion[..., :3, :], avatar.means, avatar.quats)
        # Particles (for the shared ARAP / temporal losses) ride with the Gaussian they sit nearest.
        d2 = jnp.sum((avatar.particle_rest[:, None] - avatar.means[None]) ** 2, -1)  # (M, N)
        particles = motion[:, jnp.argmin(d2, axis=1)]  # (T, M, 4, 4)
        out = FrameGaussians(
            means=means, quats=quats, scales=jnp.broadcast_to(jnp.exp(avatar.log_scales), means.shape),
            opacities=jnp.broadcast_to(jax.nn.sigmoid(avatar.opacity_logits), means.shape[:2]),
            colors=jnp.broadcast_to(avatar.colors, (t,) + avatar.colors.shape), particle_transforms=particles)
        w = self.window - 1
        new_carry = Carry(transforms=carry.transforms,
                          window=history[history.shape[0] - w:].astype(jnp.float32) if w else carry.window,
                          valid=valid[valid.shape[0] - w:] if w else carry.valid, frame=carry.frame + t)
        return out, new_carry


class PoseDrivenTalkingAvatar(nnx.Module):
    """Audio -> Gaussians for the baseline: the same :class:`DrivingEncoder` as the audio-driven model."""

    def __init__(self, config, rngs: nnx.Rngs, *, encoder=None):
        self.driving = DrivingEncoder(config.audio, config.model.d_model, rngs, encoder=encoder)
        self.motion = PoseDrivenAvatar(config.model, rngs)

    def __call__(self, avatar: CanonicalAvatar, audio: jax.Array, num_frames: int | None = None,
                 carry: Carry | None = None) -> tuple[FrameGaussians, Carry]:
        """``audio (S,)`` at 16 kHz -> per-frame Gaussians ``(T, N, ...)`` and the carry after the last frame."""
        offset = 0 if carry is None else carry.frame
        driving = self.driving(audio, num_frames, frame_offset=offset)
        return self.motion(avatar, driving, carry)
