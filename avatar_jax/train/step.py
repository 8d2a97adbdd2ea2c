"""The jitted train step: audio -> driving tokens -> per-frame Gaussians -> renders -> losses -> AdamW.

One sample is ``T`` consecutive frames with their exact audio span; the model integrates particle
motion over the frames with ``lax.scan``, so the rendering losses of frame ``t`` reach the twists
of every earlier frame. The step is ``jax.jit`` with explicit in/out shardings over the
``("data","fsdp","model")`` mesh and donates the old state.

NaN/Inf guard: when the loss or any gradient is not finite, or the renderer reports an overflow (more
tile intersections than ``capacity``: that frame is NaN, never silently truncated), the step keeps the
parameters and optimiser state it was given and counts the step (``bad_streak``, ``bad_total``);
the loop stops after ``train.max_bad_steps`` in a row.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from avatar_jax.errors import ConfigError
from avatar_jax.geometry import Camera
from avatar_jax.model import landmarks as landmarks_lib
from avatar_jax.model.avatar import FrameGaussians
from avatar_jax.model.canonical import CanonicalAvatar
from avatar_jax.render import intersection_count, render
from avatar_jax.train import losses
from avatar_jax.train.data import Batch
from avatar_jax.train.state import TrainState


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StepConstants:
    """Arrays every step reads and never changes (replicated): the canonical avatar, the landmark
    binding ``(L,K)`` with each landmark's Eq. 10 group ``(L,)``, ARAP neighbours ``(M,k)``, and each
    landmark's weight ``(L,)`` (multiplies its confidence)."""

    avatar: CanonicalAvatar
    binding: landmarks_lib.LandmarkBinding | None
    landmark_group: jax.Array | None
    neighbours: jax.Array | None
    landmark_weight: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    width: int
    height: int
    capacity: int
    background: tuple[float, float, float]
    backend: str


def make_constants(config, avatar: CanonicalAvatar, landmark_rest: np.ndarray | None,
                   region: np.ndarray | None = None) -> StepConstants:
    """Landmark binding from rest points in template order (553,3) (lip points within their lip's region when
    the rig's ``region (N,)`` is known), ARAP neighbours, both once in numpy; ``loss.kpt_lips`` weighs the lip
    landmarks (:data:`avatar_jax.train.avatar.LIP_LANDMARKS`) inside the face group."""
    from avatar_jax.train.avatar import LIP_LANDMARKS, landmark_binding

    lc = config.loss
    losses.robust_rho(jnp.zeros(()), 1.0, str(lc.kpt_rho))  # a wrong kind is a ConfigError now, not mid-compile
    binding = group = weight = None
    if float(lc.keypoints):
        if landmark_rest is None:
            raise ConfigError("loss.keypoints > 0 needs the avatar's landmark rest points, and this avatar has "
                              "none (only prepare --synthetic avatars carry them); set loss.keypoints=0")
        binding = landmark_binding(avatar, landmark_rest, region, int(lc.landmark_k))
        group = jnp.asarray(losses.template_keypoint_groups())
        w = np.ones(len(landmark_rest), np.float32)
        w[list(LIP_LANDMARKS)] = float(lc.get("kpt_lips", 1.0))
        weight = jnp.asarray(w)
    neighbours = (jnp.asarray(losses.arap_neighbours(np.asarray(avatar.particle_rest), int(lc.arap_k)))
                  if float(lc.arap) else None)
    return StepConstants(avatar, binding, group, neighbours, weight)


def render_capacity(avatar: CanonicalAvatar, camera: Camera, factor: float) -> int:
    """Intersection slots per frame: a power of two >= ``factor`` x the rest pose's count (motion and
    residual scales grow footprints; a frame that still overflows makes a counted, skipped step)."""
    if factor < 1.0:
        raise ConfigError(f"train.capacity_factor must be >= 1, got {factor}")
    ri = avatar.render_inputs()
    hits = max(intersection_count(ri["means"], ri["quats"], ri["scales"], camera), 1)
    return 1 << (int(np.ceil(factor * hits)) - 1).bit_length()


def background_colour(batch: Batch, fallback) -> tuple[float, float, float]:
    """The clips' backdrop: median colour of the pixels outside the person mask (``fallback`` if none)."""
    outside = np.asarray(batch.masks) < 3
    if outside.sum() < 16:
        return tuple(float(x) for x in fallback)
    return tuple(float(x) for x in np.median(np.asarray(batch.frames)[outside], axis=0) / 255.0)


def render_settings(config, avatar: CanonicalAvatar, batch: Batch, width: int, height: int) -> RenderSettings:
    """What training renders with: ``batch``'s first camera sized by :func:`render_capacity` at
    ``train.capacity_factor``, the clips' backdrop (``render.background`` when no backdrop is visible) and
    ``render.backend``. Training, evaluation and the demo call this so that all score the same renders."""
    camera = Camera(jnp.asarray(batch.viewmat[0]), jnp.asarray(batch.K[0]), width, height)
    return RenderSettings(width, height, render_capacity(avatar, camera, float(config.train.capacity_factor)),
                          background_colour(batch, config.render.background), str(config.render.backend))


def render_sequence(frames: FrameGaussians, camera: Camera, rs: RenderSettings
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(T,N,...)`` Gaussians seen by one camera -> ``rgb (T,H,W,3)``, ``alpha (T,H,W)`` (float32) and
    ``overflow ()``: True when some frame's intersections did not fit ``rs.capacity`` (its image is NaN).

    One batched render call: frame ``t``'s Gaussians with camera copy ``t``.
    """
    t = frames.means.shape[0]
    cams = Camera(jnp.broadcast_to(camera.viewmat, (t, 4, 4)), jnp.broadcast_to(camera.K, (t, 3, 3)),
                  rs.width, rs.height)
    f32 = [x.astype(jnp.float32) for x in (frames.means, frames.quats, frames.scales, frames.opacities,
                                           frames.colors)]
    out = render(*f32, cams, background=rs.background, backend=rs.backend, capacity=rs.capacity * t,
                 check_finite=False)
    return out.rgb, out.alpha, jnp.any(out.overflow)


def predict(graphdef: nnx.GraphDef, params: nnx.State, consts: StepConstants, audio: jax.Array, K: jax.Array,
            viewmat: jax.Array, num_frames: int, rs: RenderSettings, init: jax.Array | None = None,
            start: jax.Array | int = 0, burn_in: int = 0) -> tuple[FrameGaussians, jax.Array, jax.Array, jax.Array]:
    """One sequence: ``audio (A,)`` -> Gaussians ``(T',N,...)``, ``rgb (T',H,W,3)``, ``alpha (T',H,W)``, overflow.

    The particles start from ``init (M,4,4)`` (the teacher's state, local frames; None: rest) and the
    position encoding from frame ``start`` of the clip. ``burn_in`` > 0 runs the first ``burn_in`` frames
    without output and without gradient into the carry (a window of unknown start pose settles first);
    then ``T' = num_frames - burn_in``."""
    model = nnx.merge(graphdef, params)
    carry = model.motion.init_carry(consts.avatar, transforms=init, frame=start)
    if burn_in:
        if not 0 < burn_in < num_frames:
            raise ConfigError(f"train.burn_in_frames must be in [0, seq_len), got {burn_in} for {num_frames} frames")
        cut = int(round(burn_in * audio.shape[0] / num_frames))
        _, carry = model(consts.avatar, audio[:cut], burn_in, carry)
        carry = jax.lax.stop_gradient(carry)
        audio, num_frames = audio[cut:], num_frames - burn_in
    out, _ = model(consts.avatar, audio, num_frames, carry)
    rgb, alpha, overflow = render_sequence(out, Camera(viewmat, K, rs.width, rs.height), rs)
    return out, rgb, alpha, overflow


# Jitted once per (graphdef, frame count, settings): evaluation and previews call it per clip.
predict_jit = jax.jit(predict, static_argnums=(0, 6, 7), static_argnames=("burn_in",))


def loss_terms(graphdef, params, consts: StepConstants, batch: Batch, rs: RenderSettings, loss_config,
               teacher_gradient=None, burn_in: int = 0, return_renders: bool = False
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss and every term (weighted ``image``... plus raw ``kpt_*``, ``twist_accel``, ``means_accel``).

    Each window starts from ``batch.init`` (teacher state; rest when None) at frame ``batch.start``; the
    first ``burn_in`` frames are run but not scored. ``teacher_gradient``: the VSD hook on the renders
    ``(B,T,H,W,3)`` (:mod:`avatar_jax.train.vsd`); ``return_renders``: the terms also hold ``"rendered"`` (the
    variational VSD score learns them)."""
    t = batch.num_frames
    b = batch.audio.shape[0]
    start = batch.start if batch.start is not None else jnp.zeros((b,), jnp.int32)

    def one(a, k, v, init, s):
        return predict(graphdef, params, consts, a, k, v, t, rs, init, s, burn_in)

    if batch.init is None:
        out, rgb, _, overflow = jax.vmap(lambda a, k, v, s: one(a, k, v, None, s))(
            batch.audio, batch.K, batch.viewmat, start)
    else:
        out, rgb, _, overflow = jax.vmap(one)(batch.audio, batch.K, batch.viewmat, batch.init, start)
    if burn_in:  # the scored frames
        batch = dataclasses.replace(batch, **{f: getattr(batch, f)[:, burn_in:] for f in _FRAME_FIELDS})
    frames = batch.frames.astype(jnp.float32) / 255.0
    masks = batch.masks.astype(jnp.float32) / 255.0
    lc = loss_config
    terms = dict(losses.image_terms(rgb, frames, masks, dssim_weight=float(lc.dssim_weight),
                                    background_weight=float(lc.background_weight)))
    raw = {}
    if consts.binding is not None:
        points = landmarks_lib.landmarks(out.means.astype(jnp.float32), consts.binding)  # (B,T,L,3)
        target, conf = losses.clip_keypoints(batch.body, batch.body_conf, batch.face, batch.face_conf,
                                             batch.hands, batch.hands_conf)
        if consts.landmark_weight is not None:
            conf = conf * consts.landmark_weight

        def kpt(p, k, v, tg, cf):
            cam = Camera(v, k, rs.width, rs.height)
            return losses.keypoint_terms(p, cam, tg, cf, consts.landmark_group, rho=str(lc.kpt_rho),
                                         scale=float(lc.kpt_scale))

        per_sample = jax.vmap(kpt)(points, batch.K, batch.viewmat, target, conf)
        raw.update({k: jnp.mean(v) for k, v in per_sample.items()})
        terms["keypoints"] = losses.keypoint_loss(raw, face=float(lc.kpt_face), hands=float(lc.kpt_hand),
                                                  body=float(lc.kpt_body))
    if consts.neighbours is not None:
        terms["arap"] = losses.arap_loss(out.particle_transforms.astype(jnp.float32), consts.avatar.particle_rest,
                                         consts.neighbours)
    if float(lc.temporal):
        temporal = losses.temporal_terms(out.particle_transforms.astype(jnp.float32), out.means.astype(jnp.float32))
        raw.update(temporal)
        terms["temporal"] = losses.temporal_loss(temporal, float(lc.temporal_means))
    terms["vsd"] = losses.vsd_term(rgb, teacher_gradient)
    total, weighted = losses.total_loss(terms, lc)
    if return_renders:
        raw["rendered"] = rgb
    return total, {**weighted, **raw, "overflow": jnp.any(overflow)}


_FRAME_FIELDS = ("frames", "masks", "face", "face_conf", "hands", "hands_conf", "body", "body_conf")


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, rs: RenderSettings,
                    loss_config, *, state_shardings: TrainState, const_shardings, batch_shardings: Batch, mesh,
                    distill=None, teacher_shardings=None, score_shardings=None, burn_in: int = 0):
    """``step(state, consts, batch) -> (state, metrics)`` jitted with the given shardings; ``state`` is donated.

    With ``distill`` (a :class:`avatar_jax.train.vsd.Distiller`) the step is ``step(state, consts, batch, teacher)``:
    the frozen teacher's parameters come in with ``teacher_shardings`` and give the VSD term its gradient. A
    variational distiller makes it ``step(state, consts, batch, teacher, score) -> (state, score, metrics)``: the
    LoRA score (:class:`avatar_jax.train.vsd.ScoreState`, ``score_shardings``, donated) gives ``eps_phi`` and takes
    one AdamW step on this step's renders; ``metrics["vsd_score"]`` is its denoising loss.
    ``burn_in``: leading frames of each window run without loss (``train.burn_in_frames``).

    ``metrics``: ``loss`` and every term, ``grad_norm``, ``overflow``, ``ok`` (this step was applied), ``bad_streak``,
    ``bad_total`` (all replicated scalars).
    """

    if float(loss_config.vsd) and distill is None:
        raise ConfigError("loss.vsd > 0 needs a teacher (vsd.teacher); set loss.vsd=0 to train without VSD")

    variational = distill is not None and distill.variational

    def step(state: TrainState, consts: StepConstants, batch: Batch, teacher=None, score=None):
        chex.assert_rank(batch.audio, 2)
        # the teacher hears the audio of the scored frames (after the burn-in)
        vsd_audio = batch.audio[:, int(round(burn_in * batch.audio.shape[1] / batch.num_frames)):]
        hook = None if distill is None else distill.hook(teacher, vsd_audio, state.step, score)
        grad_fn = jax.value_and_grad(lambda p: loss_terms(graphdef, p, consts, batch, rs, loss_config, hook,
                                                                burn_in, variational),
                                     has_aux=True)
        (loss, terms), grads = grad_fn(state.params)
        if variational:  # the LoRA score learns this step's renders (stop-gradient)
            new_score, terms["vsd_score"] = distill.update_score(teacher, score, terms.pop("rendered"), vsd_audio,
                                                                 state.step)
        ok = jnp.isfinite(loss) & _all_finite(grads) & ~terms["overflow"]
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A bad step changes nothing but the counters (jnp.where also stops NaN from leaking in).
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        params = jax.tree.map(keep, params, state.params)
        opt_state = jax.tree.map(keep, opt_state, state.opt_state)
        bad = (~ok).astype(jnp.int32)
        new = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                         bad_streak=jnp.where(ok, 0, state.bad_streak + 1), bad_total=state.bad_total + bad)
        metrics = dict(loss=loss, **terms, grad_norm=optax.tree.norm(grads), ok=ok, bad_streak=new.bad_streak,
                       bad_total=new.bad_total)
        if variational:
            return new, jax.tree.map(keep, new_score, score), metrics
        return new, metrics

    replicated = NamedSharding(mesh, PartitionSpec())
    in_shardings = (state_shardings, const_shardings, batch_shardings)
    if distill is not None:
        in_shardings += (teacher_shardings,)
    if variational:
        return jax.jit(step, in_shardings=in_shardings + (score_shardings,),
                       out_shardings=(state_shardings, score_shardings, replicated), donate_argnums=(0, 4))
    return jax.jit(step, in_shardings=in_shardings, out_shardings=(state_shardings, replicated), donate_argnums=0)


def constant_shardings(mesh, consts: StepConstants):
    """Constants are small next to the renders: replicated on every device."""
    return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), consts)
