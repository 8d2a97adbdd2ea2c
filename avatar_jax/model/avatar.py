"""The audio-driven avatar (paper 3.2): driving tokens -> particle motion -> skinning -> residuals.

``AudioDrivenAvatar(avatar, driving, carry) -> (FrameGaussians, carry)``: a pure function of the
parameters, the canonical avatar and the fused driving tokens ``D (T, d)`` (from
``avatar_jax.model.fusion``). ``carry`` holds what crosses a chunk boundary (the particles' last
transforms, the head's causal window and the absolute index of the next frame), so long audio can be
rendered chunk by chunk with the same result as one pass. A training window can start from a known
pose: ``init_carry(avatar, transforms=...)``.

Motion per Gaussian is the body template's LBS (joint rotations predicted per frame,
:mod:`avatar_jax.model.body_skinning`) applied after the particle residuals (closed-loop particle
deformer, :mod:`avatar_jax.model.deformer`) blended by identity-adaptive skinning. Every Table 3
ablation, and the body-template path, is a config switch that removes a real path
(see :class:`ModelSwitches`).
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.geometry import se3
from avatar_jax.model import body_skinning, skinning
from avatar_jax.model.canonical import CanonicalAvatar
from avatar_jax.model.deformer import ParticleDeformer, local_to_world
from avatar_jax.model.gaussian_head import GaussianHead, Residuals
from avatar_jax.model.query_tokens import QueryEncoder, pool_per_particle

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelSwitches:
    """Paper Table 3 (deformer block and personalisation) as switches; all True is the full model."""

    particle_deformer: bool = True  # False: no particle motion, only head residuals (Fig. 5c)
    implicit_motion_tokens: bool = True  # False: particle queries from rest position only
    weight_decoder: bool = True  # False: fixed template skinning weights
    face_offsets: bool = True  # False: no face expression offsets
    hand_offsets: bool = True  # False: no hand gesture offsets
    body_offsets: bool = True  # False: no body offsets
    gaussian_head: bool = True  # False: no per-Gaussian residuals at all
    body_skinning: bool = True  # False: no body-template LBS under the particles (particles move everything)

    @classmethod
    def from_config(cls, model_config) -> ModelSwitches:
        return cls(**{f.name: bool(model_config.get(f"use_{f.name}", True)) for f in dataclasses.fields(cls)})


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Carry:
    """State carried across chunks: ``transforms (M,4,4)`` (local), ``window (w-1,d)``, ``valid (w-1,)``,
    ``frame ()`` int32, the absolute index of the next frame (position encoding, truncation points)."""

    transforms: jax.Array
    window: jax.Array
    valid: jax.Array
    frame: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FrameGaussians:
    """Render inputs per frame: means (T,N,3), quats (T,N,4), scales (T,N,3), opacities (T,N), colors (T,N,..,3)."""

    means: jax.Array
    quats: jax.Array
    scales: jax.Array
    opacities: jax.Array
    colors: jax.Array
    particle_transforms: jax.Array  # (T, M, 4, 4) world-space particle motion, for losses (ARAP etc.)

    def frame(self, t: int) -> dict[str, jax.Array]:
        """Keyword arguments for ``avatar_jax.render.render`` at frame ``t``."""
        return dict(means=self.means[t], quats=self.quats[t], scales=self.scales[t],
                    opacities=self.opacities[t], colors=self.colors[t])


class AudioDrivenAvatar(nnx.Module):
    """Deformer + identity-adaptive skinning + Gaussian head, built from ``config.model``."""

    def __init__(self, model_config, rngs: nnx.Rngs):
        c = model_config
        self.switches = ModelSwitches.from_config(c)
        dtype = _DTYPES[c.get("compute_dtype", "float32")]
        param_dtype = _DTYPES[c.get("param_dtype", "float32")]
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.d_model = c.d_model
        self.window = c.get("window", 4)
        self.compute_dtype = dtype
        s = self.switches
        self.queries = QueryEncoder(c.d_model, c.get("fourier_bands", 6), rngs, with_template=s.particle_deformer,
                                    **kw)
        self.deformer = ParticleDeformer(
            c.d_model, c.num_heads, c.num_particles, rngs, num_bands=c.get("fourier_bands", 6),
            max_twist=c.get("max_twist", 0.5), twist_scale=c.get("twist_scale", 0.1),
            use_implicit_motion_tokens=s.implicit_motion_tokens, closed_loop=c.get("closed_loop", True),
            pull_max=c.get("pull_max", 1.0), pull_init=c.get("pull_init", 0.9),
            state_scale=(c.get("state_scale_rot", 0.1), c.get("state_scale_trans", 0.01)),
            tbptt=c.get("tbptt_frames", 0), **kw,
        ) if s.particle_deformer else None
        self.num_joints = c.get("num_joints", 5)
        self.body_motion = body_skinning.BodyMotionHead(
            c.d_model, self.window, self.num_joints, rngs, max_rotation=c.get("max_joint_rotation", 0.6),
            output_scale=c.get("joint_scale", 0.1), **kw) if s.body_skinning else None
        self.weight_decoder = (skinning.WeightDecoder(c.d_model, c.get("bind_k", 4), rngs, **kw)
                               if s.particle_deformer and s.weight_decoder else None)
        branches = tuple(name for name, on in (("body", s.body_offsets), ("face", s.face_offsets),
                                               ("hands", s.hand_offsets)) if on)
        self.head = GaussianHead(
            c.d_model, c.num_heads, self.window, rngs, branches=branches,
            max_offset=c.get("max_offset", 0.05), max_log_scale=c.get("max_log_scale", 0.5),
            max_opacity_logit=c.get("max_opacity_logit", 4.0), max_color=c.get("max_color", 0.5),
            residual_scale=c.get("residual_scale", 0.1), **kw,
        ) if s.gaussian_head and branches else None

    def init_carry(self, avatar: CanonicalAvatar, transforms: jax.Array | None = None,
                   frame: int | jax.Array = 0) -> Carry:
        """The carry before frame ``frame``: particles at rest (or at ``transforms (M,4,4)``, local
        frames, e.g. the teacher's pose where a training window starts), empty head window."""
        w = self.window - 1
        if transforms is None:
            transforms = se3.identity((avatar.num_particles,))
        chex.assert_shape(transforms, (avatar.num_particles, 4, 4))
        return Carry(transforms=jnp.asarray(transforms, jnp.float32),
                     window=jnp.zeros((w, self.d_model), jnp.float32), valid=jnp.zeros((w,), bool),
                     frame=jnp.asarray(frame, jnp.int32))

    def __call__(self, avatar: CanonicalAvatar, driving: jax.Array, carry: Carry | None = None
                 ) -> tuple[FrameGaussians, Carry]:
        """``driving (T, d_model)`` -> per-frame Gaussians ``(T, N, ...)`` and the carry after frame T-1."""
        avatar.check()
        chex.assert_rank(driving, 2)
        if driving.shape[-1] != self.d_model:
            raise ValueError(f"driving tokens must have d_model={self.d_model} features, got {driving.shape}")
        if carry is None:
            carry = self.init_carry(avatar)
        t = driving.shape[0]
        driving = driving.astype(self.compute_dtype)
        tokens = self.queries.gaussian_tokens(avatar)  # (N, d)

        # Causal windows of driving tokens (frames t-w+1..t) for the Gaussian head and the body motion head.
        history = jnp.concatenate([carry.window.astype(driving.dtype), driving], axis=0)  # (w-1+T, d)
        valid = jnp.concatenate([carry.valid, jnp.ones((t,), bool)])
        idx = jnp.arange(t)[:, None] + jnp.arange(self.window)[None, :]  # (T, w)
        windows, windows_valid = history[idx], valid[idx]

        # Particle residuals: closed-loop deformer -> world-space particle transforms -> blended per Gaussian.
        if self.deformer is not None:
            pooled = pool_per_particle(tokens, avatar.bind_index, avatar.bind_weight, avatar.num_particles)
            kv_tokens = jnp.concatenate([pooled, self.queries.template_tokens(avatar)], axis=0)  # [Q || Q0]
            local, _ = self.deformer(driving, kv_tokens, avatar.particle_rest, avatar.particle_part,
                                     carry.transforms, carry.frame)
            world = local_to_world(local, avatar.particle_rest)
            weights = (self.weight_decoder(tokens, avatar.bind_weight) if self.weight_decoder is not None
                       else avatar.bind_weight)
            motion = skinning.blend(world, avatar.bind_index, weights)  # (T, N, 3, 4)
            new_transforms = local[-1]
        else:
            world = se3.identity((t, avatar.num_particles))
            motion = None
            new_transforms = carry.transforms

        # Body template LBS after the particle residuals: posed = LBS_body(t) o particles(t) (rest point).
        if self.body_motion is not None:
            pivots, parents, j_index, j_weight = avatar.template()
            if pivots.shape[0] > self.num_joints:
                raise ValueError(f"the avatar's template has {pivots.shape[0]} joints, the model predicts "
                                 f"{self.num_joints} (model.num_joints)")
            rotations = self.body_motion(windows, windows_valid)[:, :pivots.shape[0]]
            body = body_skinning.blend_joints(body_skinning.joint_transforms(rotations, pivots, parents),
                                              j_index, j_weight)[..., :3, :]  # (T, N, 3, 4)
            if motion is not None:
                rot = body[..., :3] @ motion[..., :3]
                trans = (body[..., :3] @ motion[..., 3:])[..., 0] + body[..., 3]
                motion = jnp.concatenate([rot, trans[..., None]], axis=-1)
            else:
                motion = body
        if motion is not None:
            means, quats = skinning.apply_to_gaussians(motion, avatar.means, avatar.quats)
        else:
            means = jnp.broadcast_to(avatar.means, (t,) + avatar.means.shape)
            quats = jnp.broadcast_to(avatar.quats, (t,) + avatar.quats.shape)

        # Appearance and residual geometry: Gaussian head over the causal window of driving tokens.
        if self.head is not None:
            res = self.head(windows, windows_valid, tokens, avatar.part, avatar.part_counts)
        else:
            n = avatar.num_gaussians
            res = Residuals(jnp.zeros((t, n, 3)), jnp.zeros((t, n, 3)), jnp.zeros((t, n)), jnp.zeros((t, n, 3)))

        out = FrameGaussians(
            means=means + res.offset,
            quats=quats,
            scales=jnp.exp(avatar.log_scales[None] + res.log_scale),
            opacities=jax.nn.sigmoid(avatar.opacity_logits[None] + res.opacity_logit),
            colors=_add_base_color(avatar.colors, res.color),
            particle_transforms=world,
        )
        w = self.window - 1
        new_carry = Carry(transforms=new_transforms,
                          window=history[history.shape[0] - w:].astype(jnp.float32) if w else carry.window,
                          valid=valid[valid.shape[0] - w:] if w else carry.valid,
                          frame=carry.frame + t)
        return out, new_carry


def _add_base_color(colors: jax.Array, delta: jax.Array) -> jax.Array:
    """Add ``delta (T,N,3)`` to RGB ``(N,3)`` or to the DC term of SH ``(N,C,3)`` (scaled to RGB units)."""
    if colors.ndim == 2:
        return colors[None] + delta
    sh_c0 = 0.28209479177387814  # rgb = c0 * dc + 0.5, so d(rgb) = delta needs d(dc) = delta / c0
    base = jnp.broadcast_to(colors, (delta.shape[0],) + colors.shape)
    return base.at[:, :, 0].add(delta / sh_c0)


def forward(graphdef: nnx.GraphDef, state: nnx.State, avatar: CanonicalAvatar, driving: jax.Array,
            carry: Carry | None = None) -> tuple[FrameGaussians, Carry]:
    """Pure form: ``(params, avatar, driving) -> per-frame Gaussians``; jit, grad and shard this."""
    model = nnx.merge(graphdef, state)
    return model(avatar, driving, carry)


def stream(graphdef: nnx.GraphDef, state: nnx.State, avatar: CanonicalAvatar, driving: jax.Array,
           chunk: int) -> FrameGaussians:
    """Run ``driving (T,d)`` in chunks of ``chunk`` frames, carrying state; equals one pass."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 frame, got {chunk}")
    step = jax.jit(forward, static_argnums=0)
    carry, outs = None, []
    for start in range(0, driving.shape[0], chunk):
        out, carry = step(graphdef, state, avatar, driving[start:start + chunk], carry)
        outs.append(out)
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *outs)
