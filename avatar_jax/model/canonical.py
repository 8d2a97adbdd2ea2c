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

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    @property
    def num_particles(self) -> int:
        return self.particle_rest.shape[0]

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
        for name in ("means", "log_scales", "quats", "opacity_logits", "colors", "part", "bind_index", "bind_weight"):
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
    return CanonicalAvatar(
        means=jnp.asarray(means), log_scales=jnp.asarray(log_scales), quats=jnp.asarray(quats),
        opacity_logits=jnp.full((len(means),), 2.0, jnp.float32), colors=jnp.asarray(colors),
        part=jnp.asarray(part), bind_index=jnp.asarray(index), bind_weight=jnp.asarray(weight),
        particle_rest=jnp.asarray(prest), particle_part=jnp.asarray(ppart),
    ).sorted_by_part()
