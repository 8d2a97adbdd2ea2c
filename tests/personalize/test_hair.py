"""Head shape the photo does not show (personalize/hair.py): hanging hair hides the jaw from behind, skin below
the ears keeps a small offset bound. On the bald template itself, no fit, no MediaPipe."""

import numpy as np
import pytest

from avatar_jax.body import parts
from avatar_jax.body.template import load_template
from avatar_jax.gaussians import init
from avatar_jax.personalize import hair
from avatar_jax.personalize.photometric import normals_of


@pytest.fixture(scope="module")
def head():
    tpl = load_template()
    verts = np.asarray(tpl.reference_vertices)
    cloud = init.init_on_template(tpl, 6000, vertices=verts, seed=0)
    means, part = np.asarray(cloud.means), np.asarray(cloud.part)
    seen = np.asarray(normals_of(cloud))[:, 2] < -0.3  # what a frontal photo shows (the body faces -z)
    return dict(ears=hair.ears(tpl, verts), means=means, part=part, seen=seen)


def _jaw_out_of_outline(means, part, ears):
    """Seen from straight behind, how far (metres) the face below the ears reaches beyond the back of the
    head at the same height, at its worst (positive: the jaw shows beside the back of the head)."""
    c = ears.mean(0)
    h = part == parts.HEAD
    worst = -np.inf
    for y in np.arange(c[1] - 0.07, c[1] - 0.02, 0.01):
        row = h & (np.abs(means[:, 1] - y) < 0.005)
        front, back = row & (means[:, 2] < c[2] - 0.03), row & (means[:, 2] > c[2] + 0.01)
        if front.any() and back.any():
            worst = max(worst, np.abs(means[front, 0] - c[0]).max() - np.abs(means[back, 0] - c[0]).max())
    return worst


def test_hanging_hair_hides_the_jaw_from_behind_and_moves_only_the_unseen_back(head):
    ears, means, part, seen = head["ears"], head["means"], head["part"], head["seen"]
    assert ears[0, 0] * ears[1, 0] < 0 and abs(ears[:, 1].mean() - means[part == parts.HEAD, 1].mean()) < 0.1
    # The bald template: from behind, its jaw sticks out beside the nape (a face's outline in profile).
    assert _jaw_out_of_outline(means, part, ears) > 0.01
    moved, weight = hair.hair_curtain(means, part, seen, ears)
    assert _jaw_out_of_outline(moved, part, ears) < 0.0
    step = np.linalg.norm(moved - means, axis=1)
    assert np.all(step[seen] == 0) and np.all(step[part != parts.HEAD] == 0)
    assert step.max() <= 0.04 + 1e-6 and (step > 0.01).sum() > 50
    np.testing.assert_array_equal(weight > 0, step > 0)
    assert np.all(moved[:, 1] == means[:, 1])  # hair hangs: horizontal pushes only
    c = ears.mean(0)
    r0 = np.linalg.norm(means[:, [0, 2]] - c[[0, 2]], axis=1)
    r1 = np.linalg.norm(moved[:, [0, 2]] - c[[0, 2]], axis=1)
    assert np.all(r1 >= r0 - 1e-6)  # outwards only
    assert np.all(moved[means[:, 1] < c[1] - 0.08] == means[means[:, 1] < c[1] - 0.08])  # not below its length


def test_offset_bounds_hold_the_skin_below_the_ears(head):
    means, part, ears = head["means"], head["part"], head["ears"]
    low = (part == parts.HEAD) & (means[:, 1] < ears[:, 1].mean())
    assert low.sum() > 100
    normal, slide = hair.offset_bounds(means, part, ears, 0.05, 0.03, below_ears=0.015)
    assert np.all(normal[low] == np.float32(0.015)) and np.all(normal[~low] == np.float32(0.05))
    assert np.all(slide[low] == np.float32(0.015)) and np.all(slide[~low] == np.float32(0.03))
    # A bound above max_offset / max_slide is no bound.
    normal, slide = hair.offset_bounds(means, part, ears, 0.01, 0.005, below_ears=0.02)
    assert np.all(normal == np.float32(0.01)) and np.all(slide == np.float32(0.005))
