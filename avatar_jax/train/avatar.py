"""The canonical avatar a training run deforms: the very figure its clips were rendered from.

``prepare --synthetic`` stores that figure (the rigged avatar: a reconstructed person or the built-in
figure, plus the rig's lips, mouth interior, pupils and lids) beside the clips as
``avatars/<subject>.npz`` with its landmark rest points (:mod:`avatar_jax.data.synthetic`).
``train.avatar`` may instead name a ``reconstruct`` folder or ``avatar.npz`` (real videos of that person).

Where the dataset stores its rig (region labels, bone weights): particles are placed per region
(``model.particle_counts``, scaled to ``model.num_particles``: upper and lower lip apart, eyelids, hands),
each Gaussian binds only to particles of its own region, and the rig's body is the avatar's template
(:func:`avatar_jax.data.rig.template`); :func:`teacher_start_states` then gives the teacher's pose as
particle states at every frame of a clip, so training windows start where the teacher is. Without a rig
(older datasets, reconstruct folders): half the particles on the face by farthest-point sampling, the rest
over the figure, nearest-particle binding, no template.
"""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import numpy as np

from avatar_jax.data import motion, rig, schema, synthetic
from avatar_jax.errors import InputError
from avatar_jax.model import landmarks as landmarks_lib
from avatar_jax.model import particles as particles_lib
from avatar_jax.model.canonical import PART_FACE, CanonicalAvatar, bind_to_particles


@dataclasses.dataclass(frozen=True)
class TrainingAvatar:
    """``avatar`` (sorted by part), landmark rest points ``(L,3)`` with ``defined (L,)`` (or None); ``rig`` and
    ``particle_gaussian (M,)`` (the figure Gaussian each particle sits on) where the dataset stores its rig."""

    avatar: CanonicalAvatar
    landmarks: np.ndarray | None
    landmarks_defined: np.ndarray | None
    subject: str
    rig: rig.Rig | None = None
    particle_gaussian: np.ndarray | None = None
    region: np.ndarray | None = None  # (N,) rig region of each Gaussian, in the avatar's (sorted) order


def canonical_from_figure(fig: rig.Figure, num_particles: int, bind_k: int, seed: int = 0) -> CanonicalAvatar:
    """A :class:`CanonicalAvatar` of ``fig`` (render-ready arrays) with ``num_particles`` particles."""
    if num_particles < 2:
        raise InputError(f"model.num_particles must be >= 2, got {num_particles}")
    face = np.where(fig.part == PART_FACE)[0]
    n_face = min(len(face), num_particles // 2)
    idx = particles_lib.farthest_points(fig.means[face], n_face, seed) if n_face else np.zeros(0, int)
    idx = np.concatenate([face[idx], particles_lib.farthest_points(fig.means, num_particles - n_face, seed + 1)])
    particles = fig.means[idx].astype(np.float32)
    bind_index, bind_weight = bind_to_particles(fig.means, particles, bind_k)
    opac = np.clip(fig.opacities, 1e-4, 1 - 1e-4)
    return CanonicalAvatar(
        means=jnp.asarray(fig.means, jnp.float32), log_scales=jnp.log(jnp.asarray(fig.scales, jnp.float32)),
        quats=jnp.asarray(fig.quats, jnp.float32),
        opacity_logits=jnp.asarray(np.log(opac / (1 - opac)), jnp.float32),
        colors=jnp.asarray(fig.colors, jnp.float32), part=jnp.asarray(fig.part, jnp.int32),
        bind_index=jnp.asarray(bind_index), bind_weight=jnp.asarray(bind_weight),
        particle_rest=jnp.asarray(particles), particle_part=jnp.asarray(fig.part[idx], jnp.int32),
    ).sorted_by_part()


def scaled_counts(counts: dict[str, int], total: int) -> dict[str, int]:
    """``counts`` per region scaled to sum to ``total`` (largest remainders; every named region keeps >= 1
    while ``total`` allows)."""
    names = [k for k, v in counts.items() if int(v) > 0]
    if total < 2:
        raise InputError(f"model.num_particles must be >= 2, got {total}")
    if not names:
        raise InputError("model.particle_counts has no region with a positive count")
    raw = np.asarray([float(counts[k]) for k in names])
    share = raw / raw.sum() * total
    out = np.maximum(np.floor(share), 1 if total >= len(names) else 0).astype(int)
    while out.sum() > total:  # the floor of 1 overshot: take from the largest
        out[int(np.argmax(out))] -= 1
    for i in np.argsort(-(share - np.floor(share)))[: total - out.sum()]:
        out[i] += 1
    return {k: int(v) for k, v in zip(names, out, strict=True)}


def canonical_from_rig(r: rig.Rig, counts: dict[str, int], bind_k: int) -> tuple[CanonicalAvatar, np.ndarray]:
    """The rig's figure with particles placed per region (``counts``, :data:`particles.REGIONS` names), bound
    within regions, and the rig's body as its template; also the figure index of each particle's Gaussian."""
    fig = r.figure
    gaussian, p_region = particles_lib.place_particles(fig.means, r.region, counts)
    rest = fig.means[gaussian].astype(np.float32)
    bind_index, bind_weight = particles_lib.bind_within_regions(fig.means, r.region, rest, p_region, bind_k)
    pivots, parents, j_index, j_weight = rig.template(r)
    opac = np.clip(fig.opacities, 1e-4, 1 - 1e-4)
    avatar = CanonicalAvatar(
        means=jnp.asarray(fig.means, jnp.float32), log_scales=jnp.log(jnp.asarray(fig.scales, jnp.float32)),
        quats=jnp.asarray(fig.quats, jnp.float32),
        opacity_logits=jnp.asarray(np.log(opac / (1 - opac)), jnp.float32),
        colors=jnp.asarray(fig.colors, jnp.float32), part=jnp.asarray(fig.part, jnp.int32),
        bind_index=jnp.asarray(bind_index), bind_weight=jnp.asarray(bind_weight), particle_rest=jnp.asarray(rest),
        particle_part=jnp.asarray([particles_lib.REGION_PART[particles_lib.REGIONS[k]] for k in p_region], jnp.int32),
        joint_pivots=jnp.asarray(pivots), joint_parents=jnp.asarray(parents), joint_index=jnp.asarray(j_index),
        joint_weight=jnp.asarray(j_weight),
    ).sorted_by_part()
    return avatar, gaussian


def teacher_start_states(trained: TrainingAvatar, metas: list[schema.ClipMeta], body_template: bool
                         ) -> list[np.ndarray] | None:
    """Per clip, ``(T+1, M, 4, 4)`` float32: row ``s`` is the teacher's particle state before frame ``s`` (row 0
    is rest), the carry a window starting at ``s`` begins from. None when the dataset has no rig, or a clip
    has no stored controls (real videos: windows start from rest or a burn-in)."""
    if trained.rig is None or any("controls" not in (m.extra or {}) for m in metas):
        return None
    out = []
    rest = np.asarray(trained.avatar.particle_rest)
    eye = np.broadcast_to(np.eye(4, dtype=np.float32), (1, rest.shape[0], 4, 4))
    for m in metas:
        controls = motion.Controls(**{k: np.asarray(v, np.float32) for k, v in m.extra["controls"].items()})
        bones = rig.bone_transforms(trained.rig, controls)
        state = rig.particle_state(trained.rig, bones, trained.particle_gaussian, rest, body_template)
        out.append(np.concatenate([eye, np.asarray(state, np.float32)], axis=0))
    return out


def load_training_avatar(config, data_root: str, subjects: list[str]) -> TrainingAvatar:
    """The avatar for a dataset whose training split shows ``subjects`` (exactly one: avatars are personal).

    ``config.train.avatar`` empty: the dataset's own ``avatars/<subject>.npz``; otherwise a reconstruct
    folder or ``avatar.npz`` (no rig landmarks then).
    """
    if len(subjects) != 1:
        raise InputError(f"training builds one personal avatar, but the training split shows {len(subjects)} "
                         f"subjects ({', '.join(subjects[:4])}); prepare one dataset per person")
    subject, m = subjects[0], config.model
    if config.train.avatar:
        fig = synthetic.figure_from_avatar(config.train.avatar)
        return TrainingAvatar(canonical_from_figure(fig, m.num_particles, m.bind_k, config.seed), None, None, subject)
    path = synthetic.avatar_path(data_root, subject)
    if not os.path.exists(path):
        raise InputError(f"dataset {data_root!r} has no avatar for subject {subject!r} ({path}); "
                         "rerun 'prepare --synthetic' or set train.avatar to a reconstruct folder")
    fig, marks, defined = synthetic.load_rig_avatar(path)
    r = synthetic.load_rig(path)
    if r is None:
        avatar = canonical_from_figure(fig, m.num_particles, m.bind_k, config.seed)
        return TrainingAvatar(avatar, marks, defined, subject)
    counts = scaled_counts({k: int(v) for k, v in m.particle_counts.items()}, int(m.num_particles))
    avatar, gaussian = canonical_from_rig(r, counts, int(m.bind_k))
    region = np.asarray(r.region)[np.argsort(np.asarray(fig.part), kind="stable")]  # sorted_by_part's order
    if avatar.num_particles != int(m.num_particles):  # a region with fewer Gaussians than its count
        raise InputError(f"the avatar's regions hold only {avatar.num_particles} particles of model.num_particles="
                         f"{m.num_particles} ({counts}); lower model.num_particles or model.particle_counts")
    return TrainingAvatar(avatar, marks, defined, subject, r, gaussian, region)


# MediaPipe face-mesh lip points (template order: 33 pose rows first) and the rig region they ride on.
# With plain part binding a landmark on the closed mouth takes Gaussians of both lips and opens at half
# the rate; bound within its lip's region it follows that lip alone.
LIP_LANDMARKS = {33 + schema.FACE_UPPER_LIP: rig.REGION_UPPER_LIP, 33 + 0: rig.REGION_UPPER_LIP,
                 33 + schema.FACE_LOWER_LIP: rig.REGION_LOWER_LIP, 33 + 17: rig.REGION_LOWER_LIP}


def landmark_binding(avatar: CanonicalAvatar, landmark_rest: np.ndarray, region: np.ndarray | None, k: int,
                     rows: np.ndarray | None = None) -> landmarks_lib.LandmarkBinding:
    """Binding of the template landmarks ``rows`` (default all 553) to ``avatar``'s Gaussians, by coarse part,
    the lip points within their lip's region where the rig's ``region (N,)`` labels are known."""
    rows = np.arange(len(landmark_rest)) if rows is None else np.asarray(rows)
    lpart = landmarks_lib.template_landmark_parts()[rows].astype(np.int64)
    gpart = np.asarray(avatar.part).astype(np.int64)
    if region is not None:
        offset = 100  # region labels apart from the coarse parts
        lips = np.asarray(region) == rig.REGION_UPPER_LIP
        lips |= np.asarray(region) == rig.REGION_LOWER_LIP
        gpart = np.where(lips, offset + np.asarray(region), gpart)
        lpart = np.asarray([offset + LIP_LANDMARKS[r] if r in LIP_LANDMARKS else p for r, p in zip(rows, lpart,
                                                                                                    strict=True)])
    return landmarks_lib.build_landmark_binding(np.asarray(avatar.means), gpart, np.asarray(landmark_rest)[rows],
                                                lpart, k=k)
