"""The pose-driven baseline (paper Table 2's "audio -> pose -> LBS" family) in the same framework.

    audio ──► driving tokens (same encoder + fusion) ──► temporal pose net ──► joint rotations (T,J,3)
          ──► template LBS (root, neck, jaw, left and right shoulder) ──► per-frame Gaussians

No particles, no Gaussian head, no residuals: every Gaussian moves rigidly with its blend of five
template joints, so the mouth can only open by rotating the jaw and hands only swing with their arm.
That is the bottleneck the audio-driven model is meant to remove, trained with the same losses, data
and step budget (``model.kind=pose_driven`` in ``avatar-jax train``).

The template is fitted to the canonical avatar's geometry (:func:`talking_template`, traceable: an avatar
without a 5-joint template gets it inside the forward pass), the way a body fit would give it: root, neck
and shoulders from the body parts (the rules of :func:`avatar_jax.model.canonical.upper_body_template`)
plus a jaw joint whose region is the lower front face below the mouth line.

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
from avatar_jax.model.canonical import PART_FACE, PART_HANDS, CanonicalAvatar
from avatar_jax.model.driving import DrivingEncoder

JOINTS = ("root", "neck", "jaw", "left_shoulder", "right_shoulder")
PARENTS = np.array([-1, 0, 1, 0, 0], np.int32)
ROOT, NECK, JAW, SHOULDER_L, SHOULDER_R = range(len(JOINTS))
MODEL_KINDS = ("audio_driven", "pose_driven")


def talking_template(means: jax.Array, part: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The baseline's 5-joint template fitted to a part-labelled avatar (subject facing -z, y up); traceable.

    ``means (N,3)``, ``part (N,)`` -> ``pivots (5,3)``, ``parents (5,)``, ``index (N,5)``, ``weight (N,5)``
    (rows sum to 1). Root, neck and shoulders as :func:`avatar_jax.model.canonical.upper_body_template`
    places them; the jaw takes the face Gaussians below the mouth line (a face's proportions: 38 % of the
    face's half-height below its centre) and in front of the face's centre, blended over 15 % of the
    mouth width; its pivot sits above and behind the mouth, as a jaw hinge does.
    """
    means = jnp.asarray(means, jnp.float32)
    part = jnp.asarray(part)
    x, y, z = means[:, 0], means[:, 1], means[:, 2]
    face, hands = part == PART_FACE, part == PART_HANDS
    nan = jnp.nan

    def sig(v, soft):
        return jax.nn.sigmoid(jnp.clip(v / soft, -50.0, 50.0))

    # root, neck, shoulders (upper_body_template's rules, with masks instead of selections)
    cx = jnp.median(x)
    neck = jnp.stack([cx, jnp.nanpercentile(jnp.where(face, y, nan), 2), jnp.nanmedian(jnp.where(face, z, nan))])
    shoulders = []
    for side in (-1.0, 1.0):
        on_side = hands & ((x - cx) * side > 0)
        hx = jnp.where(on_side.any(), jnp.nanmedian(jnp.where(on_side, x, nan)), cx + side * 0.2)
        shoulders.append(jnp.stack([cx + 0.6 * (hx - cx), neck[1] - 0.08, neck[2]]))
    root = jnp.stack([cx, jnp.min(y), neck[2]])
    soft = 0.03
    head = jnp.where(face, 1.0, jnp.where(hands, 0.0, sig(y - neck[1], soft)))
    arm = jnp.where(hands, 1.0, (1 - head) * sig(jnp.abs(x - cx) - 0.6 * jnp.abs(shoulders[1][0] - cx), soft))
    left = x < cx
    # the jaw: lower front face
    fx, fy, fz = (jnp.where(face, v, nan) for v in (x, y, z))
    lo = jnp.stack([jnp.nanpercentile(v, 1) for v in (fx, fy, fz)])
    hi = jnp.stack([jnp.nanpercentile(v, 99) for v in (fx, fy, fz)])
    c, r = 0.5 * (lo + hi), 0.5 * (hi - lo)
    mouth_y, jaw_soft = c[1] - 0.38 * r[1], jnp.maximum(0.15 * 0.6 * r[0], 1e-4)
    jaw = jnp.where(face, sig(mouth_y - y, jaw_soft) * sig(c[2] - z, jaw_soft), 0.0)
    w = jnp.stack([jnp.zeros_like(head), head * (1 - jaw), head * jaw, arm * left, arm * ~left], 1)
    w = w.at[:, ROOT].set(jnp.clip(1.0 - w[:, 1:].sum(1), 0.0, 1.0))
    w = w / w.sum(1, keepdims=True)
    jaw_pivot = jnp.stack([c[0], mouth_y + 0.25 * r[1], c[2] + 0.2 * r[2]])
    pivots = jnp.stack([root, neck, jaw_pivot, shoulders[0], shoulders[1]])
    index = jnp.broadcast_to(jnp.arange(len(JOINTS), dtype=jnp.int32), w.shape)
    return pivots, jnp.asarray(PARENTS), index, w


def with_talking_template(avatar: CanonicalAvatar) -> CanonicalAvatar:
    """``avatar`` carrying :func:`talking_template` as its joint template (what the baseline skins with)."""
    if avatar.part_counts is not None and avatar.part_counts[PART_FACE] < 4:
        raise ValueError(f"the avatar has {avatar.part_counts[PART_FACE]} face Gaussians; the jaw joint needs >= 4")
    pivots, parents, index, weight = talking_template(avatar.means, avatar.part)
    return dataclasses.replace(avatar, joint_pivots=pivots, joint_parents=parents, joint_index=index,
                               joint_weight=weight)


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
            avatar = with_talking_template(avatar)  # fitted here (traced: cheap next to the render)
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
