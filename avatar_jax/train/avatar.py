"""The canonical avatar a training run deforms: the very figure its clips were rendered from.

``prepare --synthetic`` stores that figure (the rigged avatar: a reconstructed person or the built-in
figure, plus the rig's lips, mouth interior, pupils and lids) beside the clips as
``avatars/<subject>.npz`` with its landmark rest points (:mod:`avatar_jax.data.synthetic`).
``train.avatar`` may instead name a ``reconstruct`` folder or ``avatar.npz`` (real videos of that person).

Particles are spread over the figure by farthest-point sampling, half of them on the face (where
speech moves most), and every Gaussian is bound to its nearest particles.
"""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import numpy as np

from avatar_jax.data import rig, synthetic
from avatar_jax.errors import InputError
from avatar_jax.model.canonical import PART_FACE, CanonicalAvatar, bind_to_particles


@dataclasses.dataclass(frozen=True)
class TrainingAvatar:
    """``avatar`` (sorted by part), landmark rest points ``(L,3)`` with ``defined (L,)`` (or None)."""

    avatar: CanonicalAvatar
    landmarks: np.ndarray | None
    landmarks_defined: np.ndarray | None
    subject: str


def farthest_points(points: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Indices of ``count`` points spread over ``points (N,3)`` (greedy farthest-point sampling)."""
    count = min(count, len(points))
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(points)))]
    dist = np.linalg.norm(points - points[chosen[0]], axis=1)
    for _ in range(count - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(points - points[nxt], axis=1))
    return np.asarray(chosen)


def canonical_from_figure(fig: rig.Figure, num_particles: int, bind_k: int, seed: int = 0) -> CanonicalAvatar:
    """A :class:`CanonicalAvatar` of ``fig`` (render-ready arrays) with ``num_particles`` particles."""
    if num_particles < 2:
        raise InputError(f"model.num_particles must be >= 2, got {num_particles}")
    face = np.where(fig.part == PART_FACE)[0]
    n_face = min(len(face), num_particles // 2)
    idx = farthest_points(fig.means[face], n_face, seed) if n_face else np.zeros(0, int)
    idx = np.concatenate([face[idx], farthest_points(fig.means, num_particles - n_face, seed + 1)])
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
    avatar = canonical_from_figure(fig, m.num_particles, m.bind_k, config.seed)
    return TrainingAvatar(avatar, marks, defined, subject)
