"""Visibility-aware appearance on synthetic scenes with known textures (no MediaPipe).

One fit of a posed template whose green right hand covers the striped chest (module fixture) feeds
several checks: the occluded chest does not take the hand's colour, the unseen back is smoother than
the seen front, and no Gaussian leaves the template surface by more than the offset bound.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.body import lbs, parts, phenotype
from avatar_jax.body.template import load_template
from avatar_jax.gaussians import init
from avatar_jax.gaussians.cloud import rgb_from_dc
from avatar_jax.personalize import appearance_fill, densify, photometric, reconstruct, surface_graph
from avatar_jax.render import render
from tests.personalize import scenes

MAX_OFFSET = 0.03
MAX_SLIDE = 0.01


def _graph(tpl, cloud, verts):
    return surface_graph.for_cloud(tpl, cloud, verts)


def _greenish(rgb):
    return (rgb[..., 1] > rgb[..., 0] + 0.3) & (rgb[..., 1] > rgb[..., 2] + 0.3)


@pytest.fixture(scope="module")
def hand_scene():
    tpl = load_template()
    verts, joints = phenotype.shaped_rest(tpl, jnp.full(6, 0.5))
    verts = np.asarray(verts)
    pose = scenes.hand_on_chest_pose(tpl, joints)
    _, skinning = lbs.forward_kinematics(tpl, joints, jnp.asarray(pose), jnp.eye(4))
    truth = init.init_on_template(tpl, 12000, vertices=verts, seed=3)
    colours = scenes.texture(np.asarray(truth.means), np.asarray(truth.part), float(verts[:, 1].max()),
                             hand_colour=scenes.GREEN)
    camera = scenes.front_camera(128, 128, centre=(0.0, 0.25, 0.0), distance=2.6)
    photo, alpha = scenes.render_subject(truth, colours, skinning, camera)
    mask = (alpha > 0.5).astype(np.float32)
    cloud = init.init_on_template(tpl, 5000, vertices=verts, seed=1)
    # Per-Gaussian bounds: the head may not move at all (0 is floored to 0.1 mm), the rest up to the globals.
    head = np.asarray(cloud.part) == parts.HEAD
    fit = photometric.fit_photo(cloud, skinning, camera, photo, mask, _graph(tpl, cloud, verts), steps=25,
                                lr=0.025, max_offset=MAX_OFFSET, max_slide=MAX_SLIDE,
                                offset_bound=np.where(head, 0.0, 1.0), slide_bound=np.where(head, 0.0, 1.0),
                                densify=densify.Densify(tpl, verts, max_new=600))
    return dict(tpl=tpl, verts=verts, photo=photo, camera=camera, fit=fit, cloud=cloud)


def test_occluded_chest_does_not_take_the_hand_colour(hand_scene):
    s = hand_scene
    chest_box = (slice(40, 75), slice(50, 78))  # rows, cols around the chest in the 128x128 photo
    assert _greenish(s["photo"][chest_box]).mean() > 0.15  # the hand really covers part of the chest
    assert s["fit"].psnr_in_mask > 18.0
    fitted = s["fit"].cloud
    # Densified where the photo shows detail (face, the hand): the new Gaussians are in the cloud.
    assert 0 < s["fit"].added <= 600 and fitted.num == s["cloud"].num + s["fit"].added
    means, part = np.asarray(fitted.means), np.asarray(fitted.part)
    torso = (part == parts.BODY) & (np.abs(means[:, 0]) < 0.2) & (means[:, 1] > 0.0)  # no arms, no hands
    args = {k: v[torso] for k, v in fitted.render_args().items()}
    # The canonical avatar (rest pose) without its arm, seen from the same camera.
    rest = render(camera=s["camera"], background=(0.0, 0.0, 0.0), **args)
    rgb = np.asarray(rest.rgb)[chest_box]
    covered = np.asarray(rest.alpha)[chest_box] > 0.5
    assert covered.mean() > 0.8
    assert _greenish(rgb[covered]).mean() < 0.01
    gaussians = np.asarray(rgb_from_dc(fitted.sh[torso, 0]))
    assert _greenish(gaussians).mean() < 0.005


def _high_frequency_energy(img, alpha):
    """Mean squared Laplacian of the gray image over pixels well inside the silhouette."""
    g = img.mean(-1)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    inside = alpha[1:-1, 1:-1] > 0.99
    for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        inside &= np.roll(alpha, (di, dj), (0, 1))[1:-1, 1:-1] > 0.99
    return float((lap[inside] ** 2).mean())


def test_unseen_back_is_smoother_than_seen_front_and_nothing_floats(hand_scene):
    fit = hand_scene["fit"]
    views, alphas = reconstruct.orbit_views(fit.cloud, [0.0, 180.0], 128, background=(0.0, 0.0, 0.0),
                                            with_alpha=True)
    front = _high_frequency_energy(views[0], alphas[0])
    back = _high_frequency_energy(views[1], alphas[1])
    assert front > 0 and back <= front, (front, back)
    # No floaters: each Gaussian (densified ones too) stays within the bound of its own point on the
    # template surface.
    tpl, verts, cloud = hand_scene["tpl"], hand_scene["verts"], fit.cloud
    surface = np.einsum("nk,nkc->nc", np.asarray(cloud.bary), verts[tpl.faces[np.asarray(cloud.face)]])
    dist = np.linalg.norm(np.asarray(fit.cloud.means) - surface, axis=1)
    assert dist.max() <= np.hypot(MAX_OFFSET, MAX_SLIDE) + 1e-4
    assert dist.max() > 1e-3  # the surface did move to fit the silhouette
    # The per-Gaussian bound holds the head (its densified children too) within 0.1 mm of the surface.
    head = np.asarray(cloud.part) == parts.HEAD
    assert (head[hand_scene["cloud"].num:]).any() and dist[head].max() <= np.hypot(1e-4, 1e-4) + 1e-5


def test_back_of_the_head_is_filled_from_hair_never_from_the_face():
    tpl = load_template()
    cloud = init.init_on_template(tpl, 8000, seed=2)
    means, part = np.asarray(cloud.means), np.asarray(cloud.part)
    graph = _graph(tpl, cloud, tpl.reference_vertices)
    head = np.isin(part, parts.FACE_PARTS)
    centre = means[head].mean(0)
    normals = np.asarray(photometric.normals_of(cloud))
    seen = normals[:, 2] < -0.3  # a photo from the front sees the surfaces facing -z
    colours = np.zeros((cloud.num, 3), np.float32)
    colours[graph.face_region] = (1.0, 0.0, 0.0)  # the face: red
    colours[~graph.face_region] = (0.0, 0.0, 1.0)  # hair, ears, neck, clothes: blue
    filled = appearance_fill.harmonic_fill(colours, seen, graph, part)
    back = head & ~seen & (means[:, 2] > centre[2] + 0.05)  # well behind the ears
    assert back.sum() > 100
    assert (filled[back, 0] < 0.05).all() and (filled[back, 2] > 0.9).all()
    # Seen Gaussians keep their colours.
    np.testing.assert_array_equal(filled[seen], colours[seen])


def test_hands_the_photo_does_not_show_take_the_skin_colour():
    tpl = load_template()
    cloud = init.init_on_template(tpl, 8000, seed=2)
    part = np.asarray(cloud.part)
    graph = _graph(tpl, cloud, tpl.reference_vertices)
    normals = np.asarray(photometric.normals_of(cloud))
    hands = np.isin(part, parts.HAND_PARTS)
    skin, sleeve = np.array([0.85, 0.6, 0.5], np.float32), np.array([0.1, 0.2, 0.8], np.float32)
    colours = np.where(graph.face_region[:, None], skin, sleeve).astype(np.float32)
    seen = (normals[:, 2] < -0.3) & ~hands  # a photo from the front that cuts both hands off
    seen[np.nonzero(hands & (part == parts.HAND_L))[0][:3]] = True  # a sliver at the frame's edge
    filled = appearance_fill.harmonic_fill(colours, seen, graph, part)
    np.testing.assert_allclose(filled[hands], np.broadcast_to(skin, (hands.sum(), 3)), atol=0.02)
    # No face seen at all: the template's skin tone, not the sleeve and not grey.
    filled = appearance_fill.harmonic_fill(colours, seen & ~graph.face_region, graph, part)
    np.testing.assert_allclose(filled[hands], np.broadcast_to(appearance_fill.DEFAULT_SKIN, (hands.sum(), 3)),
                               atol=0.02)
    # A hand the photo shows keeps its own colours.
    shown = seen | (hands & (normals[:, 2] < -0.3))
    colours[hands] = sleeve
    filled = appearance_fill.harmonic_fill(colours, shown, graph, part)
    np.testing.assert_array_equal(filled[shown], colours[shown])
