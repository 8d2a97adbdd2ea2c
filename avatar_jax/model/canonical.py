"""The canonical avatar the model drives: Gaussians in a rest pose plus the particles they bind to.

Gaussian attributes are stored as the optimiser sees them (log-scales, opacity logits); the model
turns them into render inputs (linear scales, opacities in [0,1]) per frame.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np

# Part labels shared with the body template and the offset branches.
PART_BODY, PART_FACE, PART_HANDS = 0, 1, 2
PART_NAMES = ("body", "face", "hands")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CanonicalAvatar:
    """Shapes: ``N`` Gaussians, ``M`` particles, ``K`` particles bound per Gaussian, ``C`` colour coeffs."""

    means: jax.Array  # (N, 3) rest-pose centres
    log_scales: jax.Array  # (N, 3)
    quats: jax.Array  # (N, 4) wxyz
    opacity_logits: jax.Array  # (N,)
    colors: jax.Array  # (N, 3) RGB or (N, C, 3) SH coefficients (DC first)
    part: jax.Array  # (N,) int32 in {PART_BODY, PART_FACE, PART_HANDS}
    bind_index: jax.Array  # (N, K) int32 particle indices
    bind_weight: jax.Array  # (N, K) template skinning weights, rows sum to 1
    particle_rest: jax.Array  # (M, 3) particle positions in the rest pose (pivot of their motion)
    particle_part: jax.Array  # (M,) int32 part label of each particle
    # Static: Gaussians per part when they are stored sorted by part (body, face, hands), which lets
    # per-part networks run on their own slice only; None when unsorted (then masks are used).
    part_counts: tuple[int, int, int] | None = dataclasses.field(default=None, metadata=dict(static=True))
    # Optional body template (paper Fig. 2, template LBS under the particles): J joints rotating about
    # their rest pivots, each child after its parent; every Gaussian skinned to Kj joints. Absent: one
    # root joint at the centroid carries every Gaussian (see :meth:`template`).
    joint_pivots: jax.Array | None = None  # (J, 3)
    joint_parents: jax.Array | None = None  # (J,) int32, -1 for the root, parents[j] < j
    joint_index: jax.Array | None = None  # (N, Kj) int32
    joint_weight: jax.Array | None = None  # (N, Kj), rows sum to 1

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    @property
    def num_particles(self) -> int:
        return self.particle_rest.shape[0]

    def template(self) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """``(pivots (J,3), parents (J,), index (N,Kj), weight (N,Kj))``; a single root joint when absent."""
        if self.joint_pivots is not None:
            return self.joint_pivots, self.joint_parents, self.joint_index, self.joint_weight
        n = self.num_gaussians
        return (jnp.mean(self.means, axis=0, keepdims=True), jnp.full((1,), -1, jnp.int32),
                jnp.zeros((n, 1), jnp.int32), jnp.ones((n, 1), jnp.float32))

    def check(self) -> None:
        """Assert consistent shapes (chex); call at public boundaries."""
        n, k = self.bind_index.shape
        chex.assert_shape(self.means, (n, 3))
        chex.assert_shape(self.log_scales, (n, 3))
        chex.assert_shape(self.quats, (n, 4))
        chex.assert_shape(self.opacity_logits, (n,))
        chex.assert_shape(self.part, (n,))
        chex.assert_shape(self.bind_weight, (n, k))
        chex.assert_rank(self.particle_rest, 2)
        chex.assert_shape(self.particle_part, (self.particle_rest.shape[0],))
        if self.part_counts is not None and sum(self.part_counts) != n:
            raise ValueError(f"part_counts {self.part_counts} do not add up to N={n}")
        if self.joint_pivots is not None:
            j = self.joint_pivots.shape[0]
            chex.assert_shape(self.joint_pivots, (j, 3))
            chex.assert_shape(self.joint_parents, (j,))
            chex.assert_equal_shape([self.joint_index, self.joint_weight])
            chex.assert_axis_dimension(self.joint_index, 0, n)
        if self.colors.shape[0] != n or self.colors.shape[-1] != 3:
            raise ValueError(f"colors must be (N,3) or (N,C,3) with N={n}, got {self.colors.shape}")

    def sorted_by_part(self) -> CanonicalAvatar:
        """The same avatar with Gaussians reordered body, face, hands and ``part_counts`` set."""
        part = np.asarray(self.part)
        order = np.argsort(part, kind="stable")
        counts = tuple(int((part == p).sum()) for p in (PART_BODY, PART_FACE, PART_HANDS))
        if sum(counts) != len(part):
            raise ValueError(f"part labels must be in {{0,1,2}}, got {sorted(set(part.tolist()))}")
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("means", "log_scales", "quats", "opacity_logits", "colors", "part", "bind_index", "bind_weight",
                     "joint_index", "joint_weight"):
            if fields[name] is not None:
                fields[name] = jnp.asarray(fields[name])[order]
        fields["part_counts"] = counts
        return CanonicalAvatar(**fields)

    def render_inputs(self) -> dict[str, jax.Array]:
        """Rest-pose render inputs: means, quats, linear scales, opacities, colors."""
        return dict(means=self.means, quats=self.quats, scales=jnp.exp(self.log_scales),
                    opacities=jax.nn.sigmoid(self.opacity_logits), colors=self.colors)


def bind_to_particles(means: np.ndarray, particle_rest: np.ndarray, k: int, sharpness: float = 0.02
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Template-free skinning binding: the ``k`` nearest particles with softmin-distance weights.

    Returns ``index (N,k) int32`` and ``weight (N,k)`` (rows sum to 1). ``sharpness`` is the distance
    scale (metres) of the softmin. Used when the body template's own weights are not available.
    """
    means, particle_rest = np.asarray(means, np.float32), np.asarray(particle_rest, np.float32)
    k = min(k, particle_rest.shape[0])
    d2 = ((means[:, None, :] - particle_rest[None, :, :]) ** 2).sum(-1)  # (N, M)
    index = np.argsort(d2, axis=1)[:, :k]
    dist = np.sqrt(np.take_along_axis(d2, index, axis=1))
    logits = -(dist - dist[:, :1]) / sharpness
    weight = np.exp(logits)
    weight /= weight.sum(1, keepdims=True)
    return index.astype(np.int32), weight.astype(np.float32)


def synthetic_avatar(num_gaussians: int, num_particles: int, *, k: int = 4, seed: int = 0,
                     sh_degree: int = 0) -> CanonicalAvatar:
    """A person-shaped avatar without a template (for tests, benchmarks and the CPU demo).

    A 1.7 m standing figure facing -z: a head with a face region, a torso, and two hands. Gaussians
    are denser in the face and hands, as in the paper; particles are spread over the same regions.
    """
    rng = np.random.default_rng(seed)

    def region(n, centre, radii):
        x = rng.standard_normal((n, 3))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x *= rng.uniform(0.6, 1.0, (n, 1)) ** (1 / 3)
        return (centre + x * radii).astype(np.float32)

    # share of Gaussians / particles per region: body, face, left hand, right hand
    g_counts = np.array([0.55, 0.25, 0.1, 0.1]) * num_gaussians
    g_counts = g_counts.astype(int)
    g_counts[0] += num_gaussians - g_counts.sum()
    p_counts = np.array([0.4, 0.3, 0.15, 0.15]) * num_particles
    p_counts = np.maximum(p_counts.astype(int), 1)
    p_counts[0] += num_particles - p_counts.sum()
    regions = [
        (np.array([0.0, -0.1, 0.0]), np.array([0.2, 0.75, 0.12]), PART_BODY),
        (np.array([0.0, 0.72, -0.02]), np.array([0.09, 0.12, 0.1]), PART_FACE),
        (np.array([-0.35, -0.05, -0.1]), np.array([0.05, 0.09, 0.04]), PART_HANDS),
        (np.array([0.35, -0.05, -0.1]), np.array([0.05, 0.09, 0.04]), PART_HANDS),
    ]
    means, part, prest, ppart = [], [], [], []
    for (centre, radii, label), ng, npart in zip(regions, g_counts, p_counts, strict=True):
        means.append(region(ng, centre, radii))
        part.append(np.full(ng, label, np.int32))
        prest.append(region(npart, centre, radii * 0.8))
        ppart.append(np.full(npart, label, np.int32))
    means, part = np.concatenate(means), np.concatenate(part)
    prest, ppart = np.concatenate(prest), np.concatenate(ppart)
    index, weight = bind_to_particles(means, prest, k)
    # smaller Gaussians where detail lives
    base_scale = np.where(part == PART_BODY, 0.03, 0.012)[:, None]
    log_scales = np.log(base_scale * rng.uniform(0.6, 1.4, (len(means), 3))).astype(np.float32)
    quats = rng.standard_normal((len(means), 4)).astype(np.float32)
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    rgb = np.where(part[:, None] == PART_BODY, [0.2, 0.3, 0.7], [0.85, 0.65, 0.55])
    rgb = np.clip(rgb + 0.05 * rng.standard_normal(rgb.shape), 0.0, 1.0).astype(np.float32)
    if sh_degree:
        coeffs = np.zeros((len(means), (sh_degree + 1) ** 2, 3), np.float32)
        coeffs[:, 0] = (rgb - 0.5) / 0.28209479177387814  # DC term of the real SH basis
        colors = coeffs
    else:
        colors = rgb
    pivots, parents, j_index, j_weight = upper_body_template(means, part)
    return CanonicalAvatar(
        means=jnp.asarray(means), log_scales=jnp.asarray(log_scales), quats=jnp.asarray(quats),
        opacity_logits=jnp.full((len(means),), 2.0, jnp.float32), colors=jnp.asarray(colors),
        part=jnp.asarray(part), bind_index=jnp.asarray(index), bind_weight=jnp.asarray(weight),
        particle_rest=jnp.asarray(prest), particle_part=jnp.asarray(ppart),
        joint_pivots=jnp.asarray(pivots), joint_parents=jnp.asarray(parents), joint_index=jnp.asarray(j_index),
        joint_weight=jnp.asarray(j_weight),
    ).sorted_by_part()


def upper_body_template(means: np.ndarray, part: np.ndarray, softness: float = 0.03
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 4-joint talking template (root, neck, left and right shoulder) fitted to a part-labelled figure.

    ``means (N,3)``, ``part (N,)`` (subject facing -z, y up) -> ``pivots (4,3)``, ``parents (4,)``,
    ``index (N,4)``, ``weight (N,4)``: face Gaussians follow the neck, hands their shoulder, the body
    blends from the root into the neck and shoulders with a sigmoid of ``softness`` metres.
    """
    means, part = np.asarray(means, np.float64), np.asarray(part)
    face, hands = means[part == PART_FACE], means[part == PART_HANDS]
    centre_x = float(np.median(means[:, 0]))
    neck_y = float(np.percentile(face[:, 1], 2)) if len(face) else float(means[:, 1].max())
    neck = np.array([centre_x, neck_y, float(np.median(face[:, 2])) if len(face) else 0.0])
    shoulder_y = neck_y - 0.08
    sides = []
    for side in (-1.0, 1.0):
        h = hands[(hands[:, 0] - centre_x) * side > 0] if len(hands) else np.zeros((0, 3))
        x = float(np.median(h[:, 0])) if len(h) else centre_x + side * 0.2
        sides.append(np.array([centre_x + 0.6 * (x - centre_x), shoulder_y, neck[2]]))
    pivots = np.stack([np.array([centre_x, float(means[:, 1].min()), neck[2]]), neck, sides[0], sides[1]])

    def sig(x):
        return 1.0 / (1.0 + np.exp(-np.clip(x / softness, -50, 50)))

    w = np.zeros((len(means), 4))
    head = np.where(part == PART_FACE, 1.0, np.where(part == PART_HANDS, 0.0, sig(means[:, 1] - neck_y)))
    left = means[:, 0] < centre_x
    arm = np.where(part == PART_HANDS, 1.0,
                   (1 - head) * sig(np.abs(means[:, 0] - centre_x) - 0.6 * np.abs(sides[1][0] - centre_x)))
    w[:, 1], w[:, 2], w[:, 3] = head, arm * left, arm * ~left
    w[:, 0] = np.clip(1.0 - w[:, 1:].sum(1), 0.0, 1.0)
    w /= w.sum(1, keepdims=True)
    index = np.broadcast_to(np.arange(4, dtype=np.int32), (len(means), 4)).copy()
    return (pivots.astype(np.float32), np.array([-1, 0, 0, 0], np.int32), index, w.astype(np.float32))
