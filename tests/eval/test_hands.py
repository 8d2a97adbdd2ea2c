"""HKC / HKV on known keypoint tracks; MediaPipe Hands runs and reports what it did not find."""

import numpy as np
import pytest

from avatar_jax.errors import AvatarJaxError, InputError
from avatar_jax.eval import hands


def test_hkc_and_hkv_on_known_tracks():
    t = 10
    pts = np.zeros((t, 2, 21, 2), np.float32)
    pts[:, 0] = 50.0
    pts[:, 0, :, 0] += np.where(np.arange(t) % 2 == 0, 10.0, -10.0)[:, None]  # left hand: x = 50 +- 10
    score = np.zeros((t, 2), np.float32)
    score[:, 0] = 0.9
    score[:3, 1] = 0.6  # the right hand seen in 3 frames, still
    pts[:3, 1] = 80.0
    m = hands.hand_keypoint_stats(pts, score, height=100)
    np.testing.assert_allclose(m.hkc, (10 * 0.9 + 3 * 0.6) / 13, rtol=1e-6)
    # left: std over time 10 px in x, 0 in y -> mean 5 px = 0.05 H; right: 0 -> HKV 0.025
    np.testing.assert_allclose(m.hkv, 0.025, rtol=1e-6)
    np.testing.assert_allclose(m.detection_rate, 13 / 20)
    none = hands.hand_keypoint_stats(pts, np.zeros_like(score), height=100)
    assert np.isnan(none.hkc) and np.isnan(none.hkv) and none.detection_rate == 0.0
    with pytest.raises(InputError, match="hands"):
        hands.hand_keypoint_stats(pts[:, :1], score[:, :1], height=100)


def render_template_hand(size: int = 192) -> np.ndarray:
    """The body template's left hand, shaded, seen along its thinnest axis: ``(size,size,3) uint8``.

    A licence-clean hand image (the template is CC0 MakeHuman data), made with the template
    builder's numpy z-buffer.
    """
    from avatar_jax.body import parts
    from avatar_jax.body.make_correspondences import rasterize, vertex_normals
    from avatar_jax.body.template import load_template

    tpl = load_template()
    v, faces = tpl.reference_vertices.astype(np.float64), tpl.faces
    hand_faces = faces[np.isin(tpl.part_labels[faces], [parts.HAND_L]).all(1)]
    hv = v[np.unique(hand_faces)]
    centre = hv.mean(0)
    _, _, axes = np.linalg.svd(hv - centre)  # rows: along the fingers, across the palm, the palm normal
    eye = centre + 0.5 * axes[2]
    fwd = (centre - eye) / np.linalg.norm(centre - eye)
    down = axes[0] - np.dot(axes[0], fwd) * fwd
    down /= np.linalg.norm(down)
    rot = np.stack([np.cross(down, fwd), down, fwd])
    cam = (v - eye) @ rot.T
    focal = size * 0.35 / (np.abs((hv - centre) @ axes[0]).max() / 0.5)
    uv = focal * cam[:, :2] / cam[:, 2:3] + size / 2
    face_id, bary = rasterize(uv, cam[:, 2], hand_faces, size)
    light = np.abs(vertex_normals(v, faces) @ fwd)
    colour = np.array([0.86, 0.68, 0.58]) * (0.3 + 0.7 * light[:, None])
    img = np.full((size, size, 3), 0.2)
    hit = face_id >= 0
    img[hit] = np.einsum("pk,pkc->pc", bary[hit], colour[hand_faces[face_id[hit]]])
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def test_mediapipe_hands_on_a_hand_moving_by_known_pixels():
    """A rendered hand shifted sideways by -15/0/+15 px: HKV = std(shift) / 2 / H (x moves, y does not)."""
    img = render_template_hand()
    shifts = np.array([-15, 0, 15, 0, -15, 15])
    frames = np.stack([np.roll(img, s, axis=1) for s in shifts] + [np.full_like(img, 50)])  # last: no hand
    pts, score = hands.detect_hands(frames)
    assert pts.shape == (7, 2, 21, 2) and score.shape == (7, 2)
    assert np.all(score[:6].max(1) > 0.8) and np.all(score[6] == 0)
    m = hands.hand_keypoint_stats(pts, score, height=img.shape[0])
    assert m.hkc > 0.8 and m.detection_rate == pytest.approx(6 / 14)
    np.testing.assert_allclose(m.hkv, np.std(shifts) / 2 / img.shape[0], rtol=0.1)
    still = hands.hand_metrics(np.stack([img] * 3))
    assert still.hkv < 0.1 * m.hkv  # the same hand standing still: (almost) no spread


def test_missing_mediapipe_names_what_to_install(monkeypatch, tmp_path):
    from avatar_jax.personalize import detect

    monkeypatch.setattr(detect, "_REPO", str(tmp_path))
    monkeypatch.setenv("AVATAR_JAX_MEDIAPIPE_PYTHON", "")
    with pytest.raises(AvatarJaxError, match="mediapipe-venv"):
        hands.hand_metrics(np.zeros((1, 64, 64, 3), np.uint8))
    from avatar_jax.eval import sync

    with pytest.raises(AvatarJaxError, match="mediapipe-venv"):  # the mouth detector needs it too
        sync.offline_sync(np.zeros(3200, np.float32), frames=np.zeros((5, 64, 64, 3), np.uint8))
