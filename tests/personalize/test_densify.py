"""Densification (clone / split by screen-space gradient) keeps every Gaussian bound to the body surface."""

import numpy as np
import pytest

from avatar_jax.body import parts
from avatar_jax.body.template import load_template
from avatar_jax.gaussians import init
from avatar_jax.personalize import densify


@pytest.fixture(scope="module")
def setup():
    tpl = load_template()
    cloud = init.init_on_template(tpl, 3000, seed=4)
    part = np.asarray(cloud.part)
    rng = np.random.default_rng(0)
    grad = rng.uniform(0.0, 1.0, cloud.num)
    grad[rng.uniform(size=cloud.num) < 0.2] = 0.0  # Gaussians no view sees
    return tpl, cloud, part, grad


def test_select_takes_the_largest_gradients_on_face_and_hands_only(setup):
    _, cloud, part, grad = setup
    chosen = densify.select(grad, part, fraction=0.3, max_new=10_000)
    cand = np.isin(part, densify.REGIONS) & (grad > 0)
    assert len(chosen) == round(0.3 * cand.sum())
    assert np.isin(part[chosen], densify.REGIONS).all()
    assert grad[chosen].min() >= grad[cand & ~np.isin(np.arange(cloud.num), chosen)].max()
    assert len(densify.select(grad, part, fraction=0.3, max_new=7)) == 7
    body_only = np.where(np.isin(part, densify.REGIONS), 0.0, grad)
    assert len(densify.select(body_only, part, 0.3, 100)) == 0


def test_children_lie_on_their_triangles_and_splits_shrink(setup):
    tpl, cloud, part, grad = setup
    chosen = densify.select(grad, part, fraction=0.5, max_new=10_000)
    spec = densify.Densify(tpl, tpl.reference_vertices, split_scale=0.003)
    out, parent = densify.densify(cloud, chosen, spec)
    n, m = cloud.num, len(chosen)
    assert out.num == n + m and parent.shape == (n + m,)
    np.testing.assert_array_equal(parent[:n], np.arange(n))
    np.testing.assert_array_equal(parent[n:], chosen)
    np.testing.assert_array_equal(np.asarray(out.part)[n:], part[chosen])
    # Every Gaussian sits exactly on its own triangle at its barycentric point (no floaters).
    bary = np.asarray(out.bary)
    assert (bary >= 0).all() and np.allclose(bary.sum(1), 1, atol=1e-5)
    tri = tpl.reference_vertices[tpl.faces[np.asarray(out.face)]]
    np.testing.assert_allclose(np.asarray(out.means), np.einsum("nk,nkc->nc", bary, tri), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.skin_weights).sum(1), 1, atol=1e-5)
    scales0 = np.exp(np.asarray(cloud.log_scales))[chosen]
    split = scales0.max(1) > spec.split_scale
    assert 0 < split.sum() < m  # both kinds happen here
    new_scales = np.exp(np.asarray(out.log_scales))
    np.testing.assert_allclose(new_scales[n:][split], scales0[split] / densify.SPLIT_SHRINK, rtol=1e-5)
    np.testing.assert_allclose(new_scales[chosen[split]], scales0[split] / densify.SPLIT_SHRINK, rtol=1e-5)
    np.testing.assert_allclose(new_scales[n:][~split], scales0[~split], rtol=1e-5)
    # Children are near their parents (inside the footprint), and Gaussians not chosen are untouched.
    dist = np.linalg.norm(np.asarray(out.means)[n:] - np.asarray(cloud.means)[chosen], axis=1)
    assert np.median(dist / scales0.max(1)) < 2.0
    untouched = np.setdiff1d(np.arange(n), chosen)
    np.testing.assert_array_equal(np.asarray(out.means)[untouched], np.asarray(cloud.means)[untouched])
    assert np.isin(np.asarray(out.part)[n:], (*parts.FACE_PARTS, *parts.HAND_PARTS)).all()
