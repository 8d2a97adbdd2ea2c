"""Densify a Gaussian cloud where the photo has detail (the 3DGS clone/split rule, on the body surface).

3DGS adds Gaussians where the view-space positional gradient stays large: the Gaussian sits on detail
it cannot represent. Small ones are cloned, large ones split in two with their scales divided by 1.6,
children sampled from the parent's footprint. Here only regions where detail matters for a talking
avatar qualify (face and hands, :data:`REGIONS`), the top ``fraction`` of them by accumulated gradient,
at most ``max_new`` per call. Every child stays bound to the template: its point is projected onto the
parent's triangle (barycentric coordinates clipped to the triangle), so it lies on the body surface and
is skinned with weights interpolated there, exactly like the Gaussians :mod:`avatar_jax.gaussians.init`
makes.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from avatar_jax.body import parts
from avatar_jax.body.template import BodyTemplate
from avatar_jax.gaussians import init
from avatar_jax.gaussians.cloud import GaussianCloud
from avatar_jax.geometry import quaternion

REGIONS = (*parts.FACE_PARTS, *parts.HAND_PARTS)
SPLIT_SHRINK = 1.6  # 3DGS's divisor of a split Gaussian's scales


@dataclasses.dataclass(frozen=True)
class Densify:
    """When and how much to densify inside :func:`avatar_jax.personalize.photometric.fit_photo`.

    ``template`` and ``vertices (V,3)`` (the shaped rest surface the cloud lies on) bind the children;
    ``at_fraction`` of the steps is when (gradients are averaged over the steps before it); ``fraction``
    of the candidates (face and hands) with the largest gradient are densified, at most ``max_new``;
    a candidate whose largest scale exceeds ``split_scale`` metres is split, a smaller one cloned."""

    template: BodyTemplate
    vertices: np.ndarray
    at_fraction: float = 0.35
    fraction: float = 0.3
    max_new: int = 3000
    split_scale: float = 0.004
    seed: int = 0


def _barycentric(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Barycentric coordinates ``(n,3)`` of ``p (n,3)`` projected onto triangles ``tri (n,3,3)``, clipped
    to the triangle (non-negative, summing to 1)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = np.maximum(d00 * d11 - d01 * d01, 1e-20)
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    bary = np.clip(np.stack([1 - v - w, v, w], 1), 0, None)
    return bary / np.maximum(bary.sum(1, keepdims=True), 1e-12)


def select(grad: np.ndarray, part: np.ndarray, fraction: float, max_new: int) -> np.ndarray:
    """Indices of the Gaussians to densify: the top ``fraction`` of face/hand Gaussians by ``grad (N,)``
    (only those with a non-zero gradient, i.e. that some view sees), at most ``max_new``."""
    cand = np.nonzero(np.isin(part, REGIONS) & (grad > 0))[0]
    n = min(int(round(fraction * len(cand))), max_new)
    if n <= 0:
        return np.zeros(0, np.int64)
    return np.sort(cand[np.argsort(-grad[cand], kind="stable")[:n]])


def densify(cloud: GaussianCloud, chosen: np.ndarray, spec: Densify) -> tuple[GaussianCloud, np.ndarray]:
    """Clone or split the Gaussians ``chosen (M,)`` of the canonical ``cloud``.

    Returns the new cloud (the ``N`` old Gaussians first, a split parent replaced by its first child,
    then ``M`` new ones) and ``parent (N+M,)``: for each Gaussian of the new cloud, the old one it came from.
    """
    n = cloud.num
    parent = np.concatenate([np.arange(n), chosen]).astype(np.int64)
    if len(chosen) == 0:
        return cloud, parent
    rng = np.random.default_rng(spec.seed)
    means = np.asarray(cloud.means, np.float64)
    log_scales = np.asarray(cloud.log_scales).copy()
    scales = np.exp(log_scales[chosen])
    split = scales.max(1) > spec.split_scale
    rot = np.asarray(quaternion.to_matrix(cloud.quats[chosen]), np.float64)  # columns: disc axes, normal
    faces = np.asarray(cloud.face)[chosen]
    tri = np.asarray(spec.vertices, np.float64)[spec.template.faces[faces]]

    def sample(sigma):
        """Points in the parents' disc planes, ``N(mean, sigma)`` along the two disc axes."""
        t = rng.normal(size=(len(chosen), 2)) * sigma[:, :2]
        return means[chosen] + np.einsum("nij,nj->ni", rot[:, :, :2], t)

    # Split: both children drawn from the parent's footprint; clone: a copy a little off the parent
    # (identical twins would get identical gradients and never separate).
    child_bary = _barycentric(sample(np.where(split[:, None], scales, 0.5 * scales)), tri)
    first_bary = _barycentric(sample(scales), tri)
    bary = np.asarray(cloud.bary, np.float64).copy()
    bary[chosen[split]] = first_bary[split]
    new_bary = child_bary
    shrink = np.where(split, np.log(SPLIT_SHRINK), 0.0)[:, None]
    log_scales[chosen] -= shrink
    joints, weights = np.asarray(cloud.skin_joints).copy(), np.asarray(cloud.skin_weights).copy()
    sj, sw = init.bind_skinning(spec.template, spec.template.faces[faces[split]], first_bary[split])
    joints[chosen[split]], weights[chosen[split]] = sj, sw
    nj, nw = init.bind_skinning(spec.template, spec.template.faces[faces], new_bary)
    all_faces = np.concatenate([np.asarray(cloud.face), faces])
    all_bary = np.concatenate([bary, new_bary])
    all_tri = np.asarray(spec.vertices, np.float64)[spec.template.faces[all_faces]]
    on_surface = np.einsum("nk,nkc->nc", all_bary, all_tri)
    # Old Gaussians keep their means exactly (bit for bit); children lie on their triangles.
    new_means = np.concatenate([means, on_surface[n:]])
    new_means[chosen[split]] = on_surface[chosen[split]]

    def cat(old, extra):
        return jnp.concatenate([jnp.asarray(old), jnp.asarray(extra)])

    out = cloud.replace(
        means=jnp.asarray(new_means, jnp.float32),
        log_scales=cat(log_scales, log_scales[chosen]).astype(jnp.float32),
        quats=cat(cloud.quats, cloud.quats[chosen]),
        opacity_logits=cat(cloud.opacity_logits, cloud.opacity_logits[chosen]),
        sh=cat(cloud.sh, cloud.sh[chosen]),
        part=cat(cloud.part, cloud.part[chosen]),
        face=cat(cloud.face, faces).astype(jnp.int32),
        bary=jnp.asarray(all_bary, jnp.float32),
        skin_joints=cat(joints, nj).astype(jnp.int32),
        skin_weights=cat(weights, nw).astype(jnp.float32),
    )
    return out, parent
