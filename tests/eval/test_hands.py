"""HKC / HKV on known keypoint tracks; MediaPipe Hands runs and reports what it did not find."""

import numpy as np
import pytest
from skimage import data

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


def test_mediapipe_hands_runs_on_frames():
    """The astronaut photo shows no hand: MediaPipe runs and finds none (nothing is invented)."""
    a = data.astronaut()[::2, ::2]
    m = hands.hand_metrics(np.stack([a, a[:, ::-1]]))
    assert m.detection_rate == 0.0 and np.isnan(m.hkc)


def test_missing_mediapipe_names_what_to_install(monkeypatch, tmp_path):
    from avatar_jax.personalize import detect

    monkeypatch.setattr(detect, "_REPO", str(tmp_path))
    monkeypatch.setenv("AVATAR_JAX_MEDIAPIPE_PYTHON", "")
    with pytest.raises(AvatarJaxError, match="mediapipe-venv"):
        hands.hand_metrics(np.zeros((1, 64, 64, 3), np.uint8))
