"""Training losses (paper 3.3): image, dense keypoints (Eq. 10), ARAP, temporal, the VSD slot, the total.

Every term is a pure jnp function of arrays with a leading frame axis ``T`` (extra leading batch axes
are fine unless a docstring says otherwise), jit- and grad-able, returning a scalar. The train step
puts the terms it computed into a dict and :func:`total_loss` weighs them with ``config.loss``:

    L = image * L_img + perceptual * L_perc + keypoints * L_kpt + arap * L_arap + temporal * L_temp + vsd * L_vsd

Units: images in [0,1]; keypoint residuals in fractions of the image height; ARAP residuals as a
fraction of the rest distance between neighbours (a strain, scale-free); twists per frame (rad, m);
Gaussian means in metres.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.body import keypoints as kp
from avatar_jax.errors import ConfigError, InputError
from avatar_jax.eval.ssim import ssim_map
from avatar_jax.geometry import se3
from avatar_jax.geometry.camera import Camera

TERMS = ("image", "perceptual", "keypoints", "arap", "temporal", "vsd")
_EPS = 1e-8

# ---------------------------------------------------------------- image


def image_terms(rendered: jax.Array, frames: jax.Array, mask: jax.Array, *, dssim_weight: float = 0.2,
                background_weight: float = 0.1,
                perceptual: Callable[[jax.Array], jax.Array] | None = None) -> dict[str, jax.Array]:
    """Photometric terms of rendered vs. clip frames.

    Args:
      rendered, frames: ``(..., T, H, W, 3)`` in [0,1].
      mask: ``(..., T, H, W)`` person mask in [0,1] (the clip's uint8 mask / 255).
      dssim_weight: the 3DGS mix ``(1 - l) L1 + l (1 - SSIM)``, per pixel.
      background_weight: weight of the same mix averaged outside the mask (the person term is
        averaged inside it), so the background is fitted a little without dominating.
      perceptual: a fixed encoder ``images (B,H,W,3) -> features (B,...)`` (loaded from local weights
        by the caller) or None. Both images are composited on mid-grey by the clip mask first, so the
        encoder compares the person, not the two backgrounds.

    Returns:
      ``{"image": scalar}`` plus ``{"perceptual": mean squared feature difference}`` with an encoder.
    """
    chex.assert_equal_shape([rendered, frames])
    chex.assert_shape(mask, rendered.shape[:-1])
    if rendered.shape[-1] != 3:
        raise InputError(f"image loss expects (..., H, W, 3) frames, got {rendered.shape}")
    # float32 sums even when the model renders in bfloat16 (a 256^2 x T mean loses everything in bf16)
    rendered, frames, mask = (x.astype(jnp.float32) for x in (rendered, frames, mask))
    l1 = jnp.mean(jnp.abs(rendered - frames), axis=-1)  # (..., H, W)
    photo = (1.0 - dssim_weight) * l1
    if dssim_weight:
        photo = photo + dssim_weight * (1.0 - ssim_map(rendered, frames))
    inside = jnp.sum(mask * photo) / jnp.maximum(jnp.sum(mask), _EPS)
    outside = jnp.sum((1.0 - mask) * photo) / jnp.maximum(jnp.sum(1.0 - mask), _EPS)
    terms = {"image": inside + background_weight * outside}
    if perceptual is not None:
        m = mask[..., None]
        a = (rendered * m + 0.5 * (1.0 - m)).reshape((-1,) + rendered.shape[-3:])
        b = (frames * m + 0.5 * (1.0 - m)).reshape((-1,) + frames.shape[-3:])
        terms["perceptual"] = jnp.mean((perceptual(a) - jax.lax.stop_gradient(perceptual(b))) ** 2)
    return terms


# ---------------------------------------------------------------- keypoints (Eq. 10)

GROUP_BODY, GROUP_FACE, GROUP_HANDS = 0, 1, 2
GROUP_NAMES = ("body", "face", "hands")


def template_keypoint_groups() -> np.ndarray:
    """``(553,) int32`` Eq. 10 group of each template keypoint: pose -> body, face mesh, two hands."""
    group = np.full(kp.NUM_KEYPOINTS, GROUP_BODY, np.int32)
    group[kp.FACE] = GROUP_FACE
    group[kp.LEFT_HAND] = GROUP_HANDS
    group[kp.RIGHT_HAND] = GROUP_HANDS
    return group


def clip_keypoints(body: jax.Array, body_conf: jax.Array, face: jax.Array, face_conf: jax.Array,
                   hands: jax.Array, hands_conf: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A clip's keypoint fields (:mod:`avatar_jax.data.schema`) in template order.

    ``body (...,33,2)``, ``face (...,478,2)``, ``hands (...,2,21,2)`` pixels and their confidences
    -> ``uv (...,553,2)``, ``conf (...,553)`` ordered pose, face, left hand, right hand.
    """
    lead = body.shape[:-2]
    uv = jnp.concatenate([body, face, hands.reshape(lead + (2 * kp.NUM_HAND, 2))], axis=-2)
    conf = jnp.concatenate([body_conf, face_conf, hands_conf.reshape(lead + (2 * kp.NUM_HAND,))], axis=-1)
    return uv, conf


def robust_rho(r: jax.Array, scale: float, kind: str = "geman_mcclure") -> jax.Array:
    """Robust penalty of residual lengths ``r >= 0``, zero at 0.

    ``geman_mcclure``: ``r^2 / (r^2 + s^2)`` (bounded by 1: outliers stop pulling);
    ``charbonnier``: ``sqrt(r^2 + s^2) - s`` (L2 near 0, L1 far away).
    """
    r2 = r * r
    if kind == "geman_mcclure":
        return r2 / (r2 + scale * scale)
    if kind == "charbonnier":
        return jnp.sqrt(r2 + scale * scale) - scale
    raise ConfigError(f"loss.kpt_rho must be 'geman_mcclure' or 'charbonnier', got {kind!r}")


def keypoint_terms(points: jax.Array, camera: Camera, target: jax.Array, conf: jax.Array, group: jax.Array, *,
                   rho: str = "geman_mcclure", scale: float = 0.02) -> dict[str, jax.Array]:
    """Per-group dense keypoint alignment: confidence-weighted mean rho of the reprojection error.

    Args:
      points: ``(T, L, 3)`` world landmarks (:func:`avatar_jax.model.landmarks.landmarks`).
      camera: one clip camera (``viewmat (4,4)``); vmap the whole function for a batch of clips.
      target: ``(T, L, 2)`` detected keypoints in pixels; ``conf (T, L)`` in [0,1] (0 = missing).
      group: ``(L,)`` Eq. 10 group per landmark (:func:`template_keypoint_groups`).
      rho, scale: robust penalty and its scale, in fractions of the image height.

    Returns:
      ``{"kpt_body", "kpt_face", "kpt_hands"}``: sum over (T, L) of conf * rho(|uv - target| / H),
      divided by the sum of conf, per group (0 where a group has no confident keypoint). Landmarks
      behind the camera (z < 0.01) do not count.
    """
    chex.assert_rank(points, 3)
    t, n = points.shape[:2]
    chex.assert_shape(target, (t, n, 2))
    chex.assert_shape(conf, (t, n))
    chex.assert_shape(group, (n,))
    if camera.batch_shape:
        raise InputError(f"keypoint_terms takes one camera per clip, got a batch {camera.batch_shape}")
    uv, z = camera.project(points.reshape(t * n, 3))
    uv, z = uv.reshape(t, n, 2), z.reshape(t, n)
    # Residuals behind the camera are meaningless (and divide by ~0): drop them before the norm.
    visible = z > 0.01
    diff = jnp.where(visible[..., None], uv - target, 0.0) / camera.height
    r = jnp.sqrt(jnp.sum(diff * diff, axis=-1) + 1e-12) - 1e-6  # smooth at 0 so gradients stay finite
    penalty = robust_rho(jnp.maximum(r, 0.0), scale, rho)
    w = conf * visible
    out = {}
    for g, name in enumerate(GROUP_NAMES):
        wg = w * (group == g)[None, :]
        out[f"kpt_{name}"] = jnp.sum(wg * penalty) / jnp.maximum(jnp.sum(wg), _EPS)
    return out


def keypoint_loss(kpt_terms: dict[str, jax.Array], *, face: float = 1.0, hands: float = 1.0,
                  body: float = 1.0) -> jax.Array:
    """Eq. 10 with a body term: ``face * kpt_face + hands * kpt_hands + body * kpt_body`` (hands = lambda_hand)."""
    return face * kpt_terms["kpt_face"] + hands * kpt_terms["kpt_hands"] + body * kpt_terms["kpt_body"]


# ---------------------------------------------------------------- ARAP on particle motion


def arap_neighbours(particle_rest: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest other particles of each particle in the rest pose, ``(M, k) int32`` (numpy, once)."""
    rest = np.asarray(particle_rest, np.float64)
    if rest.ndim != 2 or rest.shape[1] != 3:
        raise InputError(f"particle rest positions must be (M,3), got {rest.shape}")
    if not 1 <= k < rest.shape[0]:
        raise InputError(f"ARAP needs 1 <= k < M={rest.shape[0]} neighbours, got k={k}")
    d2 = ((rest[:, None] - rest[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    return np.argsort(d2, axis=1)[:, :k].astype(np.int32)


def arap_loss(particle_transforms: jax.Array, particle_rest: jax.Array, neighbours: jax.Array) -> jax.Array:
    """Neighbouring particles keep their rest-pose relation under particle i's rigid motion.

    ``particle_transforms (..., M, 4, 4)`` world transforms (rest -> posed), ``particle_rest (M,3)``,
    ``neighbours (M,k)``. For neighbour j of i: ``x_j - x_i - R_i (p_j - p_i)``, divided by
    ``|p_j - p_i|`` (a strain); mean of its squared length. Zero for any rigid motion of all particles.
    """
    chex.assert_rank(neighbours, 2)
    m = particle_rest.shape[0]
    chex.assert_shape(particle_transforms, (..., m, 4, 4))
    posed = se3.apply(particle_transforms, particle_rest)  # (..., M, 3)
    rest_edge = particle_rest[neighbours] - particle_rest[:, None, :]  # (M, k, 3)
    length = jnp.sqrt(jnp.sum(rest_edge**2, axis=-1) + 1e-12)
    rot = particle_transforms[..., :3, :3]  # (..., M, 3, 3)
    predicted = jnp.einsum("...mab,mkb->...mka", rot, rest_edge)
    actual = jnp.take(posed, neighbours, axis=-2) - posed[..., :, None, :]  # (..., M, k, 3)
    strain = (actual - predicted) / length[..., None]
    return jnp.mean(jnp.sum(strain**2, axis=-1))


# ---------------------------------------------------------------- temporal smoothness


def temporal_terms(particle_transforms: jax.Array, means: jax.Array) -> dict[str, jax.Array]:
    """Acceleration energy of the motion (zero for constant velocity).

    ``particle_transforms (..., T, M, 4, 4)``: per-frame twists ``xi_t = log(T_t T_{t-1}^-1)`` (the
    velocity, constant for a constant twist); ``twist_accel`` is the mean squared ``xi_t - xi_{t-1}``.
    ``means (..., T, N, 3)``: ``means_accel`` is the mean squared second difference (m / frame^2).
    Fewer than 3 frames have no acceleration: both terms are 0.
    """
    chex.assert_rank(particle_transforms, means.ndim + 1)
    if means.shape[-3] < 3:
        return {"twist_accel": jnp.zeros((), jnp.float32), "means_accel": jnp.zeros((), jnp.float32)}
    step = particle_transforms[..., 1:, :, :, :] @ se3.inverse(particle_transforms[..., :-1, :, :, :])
    xi = se3.log(step)  # (..., T-1, M, 6)
    twist_accel = jnp.mean(jnp.sum((xi[..., 1:, :, :] - xi[..., :-1, :, :]) ** 2, axis=-1))
    acc = means[..., 2:, :, :] - 2.0 * means[..., 1:-1, :, :] + means[..., :-2, :, :]
    return {"twist_accel": twist_accel, "means_accel": jnp.mean(jnp.sum(acc**2, axis=-1))}


def temporal_loss(terms: dict[str, jax.Array], means_weight: float = 1.0) -> jax.Array:
    """``twist_accel + means_weight * means_accel``."""
    return terms["twist_accel"] + means_weight * terms["means_accel"]


# ---------------------------------------------------------------- VSD slot (Eq. 9)


def vsd_term(rendered: jax.Array, teacher_gradient: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
    """Video score distillation enters as a gradient, not a value; zero until a teacher is plugged in.

    ``teacher_gradient(rendered (..., T, H, W, 3)) -> g`` (same shape) is the hook the teacher issue
    provides: ``g = w(tau) (s_psi(x_tau, tau, c) - eps)`` from Eq. 9 (it noises the frames and runs the
    frozen video diffusion teacher itself). The term returned is the surrogate
    ``sum(stop_gradient(g) * rendered) / rendered.size`` whose gradient w.r.t. the frames is
    ``g / rendered.size``, so the gradient reaches the avatar through the renderer; its value carries no
    meaning. Without a hook (today) the term is exactly 0 with zero gradient.
    """
    if teacher_gradient is None:
        return jnp.zeros((), jnp.float32)
    g = jax.lax.stop_gradient(teacher_gradient(rendered))
    chex.assert_equal_shape([g, rendered])
    return jnp.sum(g * rendered) / rendered.size


# ---------------------------------------------------------------- total


def total_loss(terms: dict[str, jax.Array], loss_config) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weigh ``terms`` (names in :data:`TERMS`) by ``loss_config.<name>`` -> ``(scalar, weighted terms)``.

    A term may be absent when its weight is 0 (it is reported as 0); an absent term with a non-zero
    weight, or an unknown term name, is a :class:`ConfigError`.
    """
    unknown = sorted(set(terms) - set(TERMS))
    if unknown:
        raise ConfigError(f"unknown loss terms {unknown}; known: {', '.join(TERMS)}")
    weighted = {}
    for name in TERMS:
        weight = float(loss_config[name])
        if name not in terms:
            if weight != 0.0:
                raise ConfigError(f"loss.{name} = {weight} but the step computed no {name!r} term")
            weighted[name] = jnp.zeros((), jnp.float32)
            continue
        chex.assert_shape(terms[name], ())
        weighted[name] = weight * terms[name]
    return sum(weighted.values()), weighted
