"""`avatar-jax reconstruct` end to end on the astronaut photo and on a synthetic full-body subject.

The astronaut and the synthetic subject run at the default settings, where the issue's bars hold (keypoint
error < 2 %, PSNR in the mask >= 28 dB, no face from behind); a reduced run costs about as much (89 against
105 CPU-s for the astronaut: compiles and the body fit dominate). The grayscale photo runs at reduced
settings. One run per subject (module fixture) feeds all checks: keypoint error, PSNR in the mask, complete
outputs, the quality gate with ``--strict``, and MediaPipe's face detector on renders from behind.
"""

import json

import imageio.v3 as iio
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.body import lbs, phenotype
from avatar_jax.body.template import load_template
from avatar_jax.cli import main
from avatar_jax.gaussians import avatar_file, init, ply
from avatar_jax.gaussians.cloud import rgb_from_dc
from avatar_jax.personalize import back_views, detect, reconstruct
from tests.personalize import scenes

pytestmark = pytest.mark.slow

# The grayscale subject's settings: its point is that no colour is invented, not the quality bars.
GAUSSIANS = {"astronaut": 20000, "synthetic": 20000, "gray": 4000}  # 20000: the default
GRAY_SETTINGS = [f"--config.reconstruct.num_gaussians={GAUSSIANS['gray']}", "--config.reconstruct.photo_steps=25",
                 "--config.reconstruct.body_steps=150", "--config.reconstruct.turntable_size=96"]
# PSNR inside the person mask: the bar at the default settings (README: astronaut 31.2 dB, synthetic
# 35.4 dB); the gray run about 1 dB under what it measures at its settings (README: 17.4-17.8 dB).
PSNR_BAR = {"astronaut": 28.0, "synthetic": 28.0, "gray": 16.5}
# Renders from behind (degrees about the vertical axis, 180 = straight behind). At the default settings no face
# is found from 127.5 to 270 degrees (README sweep, every 7.5 degrees); the reduced gray run is checked straight
# behind and 30 degrees to either side.
BEHIND_AT_DEFAULTS = [127.5, 150.0, 180.0, 210.0, 240.0, 270.0]
BEHIND = {"astronaut": BEHIND_AT_DEFAULTS, "synthetic": BEHIND_AT_DEFAULTS, "gray": [150.0, 180.0, 210.0]}


def _synthetic_subject() -> np.ndarray:
    """RGBA ``(512,384,4)`` uint8: the textured template, full body, transparent background."""
    tpl = load_template()
    verts, joints = phenotype.shaped_rest(tpl, jnp.asarray([0.3, 0.5, 0.6, 0.4, 0.6, 0.5]))
    cloud = init.init_on_template(tpl, 30000, vertices=np.asarray(verts), seed=3)
    rgb = scenes.texture(np.asarray(cloud.means), np.asarray(cloud.part), float(np.asarray(verts)[:, 1].max()))
    _, sk = lbs.forward_kinematics(tpl, joints, jnp.zeros((tpl.num_joints, 3)), jnp.eye(4))
    img, alpha = scenes.render_subject(cloud, rgb, sk, scenes.front_camera(384, 512))
    straight = img / np.maximum(alpha[..., None], 1e-6)  # the renderer's colour is premultiplied on black
    return (np.concatenate([np.clip(straight, 0, 1), alpha[..., None]], -1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module", params=["astronaut", "synthetic", "gray"])
def run(request, tmp_path_factory):
    from skimage import data

    tmp = tmp_path_factory.mktemp(request.param)
    settings = []  # the defaults
    if request.param == "astronaut":
        image = data.astronaut()
    elif request.param == "gray":  # a grayscale photo end to end (one channel in the file)
        image = data.astronaut().mean(-1).round().astype(np.uint8)
        settings = GRAY_SETTINGS
    else:
        image = _synthetic_subject()
    iio.imwrite(tmp / "in.png", image)
    assert iio.imread(tmp / "in.png").ndim == (2 if request.param == "gray" else 3)
    code = main(["reconstruct", "--image", str(tmp / "in.png"), "--out", str(tmp / "out"), "--strict", *settings])
    report = json.loads((tmp / "out" / "report.json").read_text())
    return dict(name=request.param, code=code, out=tmp / "out", report=report)


def test_fit_quality_and_the_strict_gate(run):
    r = run["report"]
    print(run["name"], {k: r[k] for k in ("keypoint_error_fraction_of_height", "psnr_in_mask_db", "ssim_in_mask",
                                          "seen_surface_share", "warnings")})
    assert r["keypoint_error_fraction_of_height"] < 0.02
    assert r["psnr_in_mask_db"] >= PSNR_BAR[run["name"]]
    assert r["seen_surface_share"] > 0.15
    # --strict: any failed bar is exit status 4, files written. At the default settings no bar fails; the
    # reduced gray run misses the PSNR bar.
    assert run["code"] == (4 if r["warnings"] else 0)
    assert bool(r["warnings"]) == (run["name"] == "gray"), r["warnings"]
    assert r["offset_m"]["max_from_surface"] < 0.06  # no Gaussian floats off the body
    # The shape follows the silhouette too, and face/hand detail was densified.
    assert r["body_silhouette_iou"] > 0.5 and r["avatar_silhouette_iou"] > 0.8
    assert r["densified_gaussians"] > 0 and r["num_gaussians"] > GAUSSIANS[run["name"]] * 0.6


def test_grayscale_photo_gives_a_gray_avatar(run):
    if run["name"] != "gray":
        pytest.skip("only the grayscale subject")
    cloud, _ = avatar_file.load_avatar(str(run["out"] / "avatar.npz"))
    rgb = np.asarray(rgb_from_dc(cloud.sh[:, 0]))
    spread = rgb.max(1) - rgb.min(1)
    # Seen and filled colours alike, hands included: no colour is invented (no template grey-blue, no
    # default skin tone, since the face is seen).
    assert np.quantile(spread, 0.99) < 0.03, np.quantile(spread, [0.5, 0.99])
    assert 0.05 < float(np.median(rgb)) < 0.95


def test_outputs_are_complete(run):
    out = run["out"]
    assert sorted(p.name for p in out.iterdir()) == ["avatar.npz", "avatar.ply", "overlay.png", "report.json",
                                                      "turntable.png"]
    cloud, extras = avatar_file.load_avatar(str(out / "avatar.npz"))
    np.testing.assert_array_equal(ply.read_ply(str(out / "avatar.ply"))["means"], np.asarray(cloud.means))
    assert extras["phenotype"].shape == (6,)
    strip = iio.imread(out / "turntable.png")
    assert strip.shape[1] == 6 * strip.shape[0]


# Faces from behind had three causes, each fixed and kept here: the face's Gaussians showing through gaps in
# the unseen back of the head and eyeball discs poking through the skin (the unseen surface is closed, inner
# discs bounded: personalize/photometric.py), and at the default settings a 4 cm jaw fin plus the bald skull's
# profile (skin below the ears bounded, hair hung round the back: personalize/hair.py).
def test_no_face_on_the_back_of_the_head(run):
    cloud, _ = avatar_file.load_avatar(str(run["out"] / "avatar.npz"))
    azimuths = BEHIND[run["name"]]
    views = back_views.head_views(cloud, [0.0, *azimuths])
    assert len(detect.face_boxes(views[0])) >= 1  # the detector does find our avatar's face from the front
    found = {a: len(detect.face_boxes(v)) for a, v in zip(azimuths, views[1:], strict=True)}
    assert not any(found.values()), found


def test_unseen_back_is_no_busier_than_the_seen_front(run):
    from tests.personalize.test_appearance import _high_frequency_energy

    cloud, _ = avatar_file.load_avatar(str(run["out"] / "avatar.npz"))
    views, alphas = reconstruct.orbit_views(cloud, [0.0, 180.0], 160, background=(0.0, 0.0, 0.0),
                                            with_alpha=True)
    front, back = (_high_frequency_energy(v, a) for v, a in zip(views, alphas, strict=True))
    print(run["name"], "high-frequency energy front", front, "back", back)
    assert front > 0 and back <= front
