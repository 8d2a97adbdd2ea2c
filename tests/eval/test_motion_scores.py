"""Motion scores (avatar_jax.eval.motion) on hand-made trajectories with known answers."""

import numpy as np
import pytest

from avatar_jax.eval import motion as scores


def test_lip_gap_scores_amplitude_correlation_and_silence():
    t = np.arange(100)
    opening = np.clip(np.sin(2 * np.pi * t / 20), 0, None) * 0.01  # teacher opens up to 1 cm
    opening[:30] = 0.0  # silence: closed
    rest = np.zeros((4, 3))
    rest[:2, 1], rest[2:, 1] = 0.01, 0.0  # upper lips 1 cm above lower lips
    teacher = np.broadcast_to(rest, (100, 4, 3)).copy()
    teacher[:, 2:, 1] -= opening[:, None]
    model = np.broadcast_to(rest, (100, 4, 3)).copy()
    model[:, 2:, 1] -= 0.5 * opening[:, None] + 0.002  # half the amplitude, 2 mm open throughout
    upper, lower = np.array([0, 1]), np.array([2, 3])
    g_t, g_m = scores.lip_gap(teacher, rest, upper, lower), scores.lip_gap(model, rest, upper, lower)
    np.testing.assert_allclose(g_t, opening, atol=1e-12)
    silent = np.zeros(100, bool)
    silent[:30] = True
    s = scores.lip_scores(g_m, g_t, silent)
    p95 = np.percentile(opening, 95)
    np.testing.assert_allclose(s["amplitude_ratio"], (0.5 * p95 + 0.002) / p95, rtol=1e-9)
    assert s["correlation"] > 0.999
    # 2 mm open in silence is above 20 % of the teacher's 95th percentile (2 mm) only if p95 < 1 cm
    assert s["closed_in_silence"] == float(0.002 < 0.2 * p95)
    assert s["teacher_closed_in_silence"] == 1.0 and s["silent_frames"] == 30


def test_silent_frames_from_audio_rms():
    audio = np.zeros(10 * 640, np.float32)
    audio[3 * 640:7 * 640] = 0.3 * np.sin(np.arange(4 * 640) * 0.3)
    np.testing.assert_array_equal(scores.silent_frames(audio, 10, 640), [1, 1, 1, 0, 0, 0, 0, 1, 1, 1])


def test_drift_and_region_errors():
    rest = np.zeros((2, 3))
    means = np.zeros((50, 2, 3))
    means[:, 0, 0] = np.linspace(0.001, 0.005, 50)  # Gaussian 0 drifts away along x
    d = scores.drift(means, rest, 10)
    np.testing.assert_allclose(d["first_mm"], 1e3 * means[:10, 0, 0].mean() / 2)
    np.testing.assert_allclose(d["ratio"], means[-10:, 0, 0].mean() / means[:10, 0, 0].mean())
    np.testing.assert_allclose(d["max_mm"], 5.0)
    target = means.copy()
    pred = means + np.array([0.0, 0.0, 0.001])  # 1 mm off everywhere
    constant = np.median(target, axis=0)
    r = scores.region_errors(pred, target, constant, rest, np.array([0, 1]), {"a": [0], "b": [1]})
    np.testing.assert_allclose(r["a"]["model_mm"], 1.0)
    np.testing.assert_allclose(r["a"]["rest_mm"], 1e3 * means[:, 0, 0].mean())
    np.testing.assert_allclose(r["a"]["explained"], 1 - 1.0 / r["a"]["rest_mm"])
    assert r["b"]["rest_mm"] == 0 and r["b"]["explained"] == 0.0


def test_pause_frames_are_real_pauses_with_margins():
    fps = 25.0
    # speech 0-1 s, a 0.12 s gap (a stop closure / comma: not a pause), speech to 2 s, a 0.6 s pause, speech
    # to 3 s, then 0.4 s of silence to the end of the clip
    speech = [(0.0, 0.5), (0.5, 1.0), (1.12, 2.0), (2.6, 3.0)]
    got = scores.pause_frames(speech, 85, fps)  # 3.4 s
    want = np.zeros(85, bool)
    want[53:62] = True  # frames 2.12-2.48 s, inside [2.1, 2.5] s: the 0.6 s pause less 0.1 s each side
    want[78:82] = True  # frames 3.12-3.28 s, inside [3.1, 3.3] s: the trailing pause less its margins
    np.testing.assert_array_equal(got, want)
    assert not scores.pause_frames(speech, 85, fps, min_pause=0.7).any()
    # overlapping phonemes and an empty list
    assert scores.pause_frames([(0.0, 2.0), (1.0, 1.5)], 50, fps).sum() == 0
    np.testing.assert_array_equal(np.where(scores.pause_frames([], 10, fps))[0], [3, 4, 5, 6])  # 0.12-0.28 s
    with pytest.raises(ValueError, match="margin"):
        scores.pause_frames(speech, 85, fps, min_pause=0.2, margin=0.12)


def test_head_frame_removes_the_head_motion_and_keeps_the_expression():
    rng = np.random.default_rng(0)
    rest = rng.normal(size=(30, 3)) * 0.05
    head = np.arange(20)  # rigid head Gaussians; 20..29 the "jaw"
    t = 6
    angles = np.linspace(0.0, 0.2, t)
    rot = np.stack([[[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]] for a in angles])
    shift = rng.normal(size=(t, 3)) * 0.01
    expression = np.zeros((t, 30, 3))
    expression[:, 20:, 1] = -0.004 * np.arange(t)[:, None]  # the jaw opens in the head's frame
    posed = np.einsum("tij,tnj->tni", rot, rest[None] + expression) + shift[:, None]
    r, tr = scores.rigid_fit(rest[head], posed[:, head])
    np.testing.assert_allclose(r, rot, atol=1e-9)
    np.testing.assert_allclose(tr, shift, atol=1e-9)
    np.testing.assert_allclose(scores.in_head_frame(posed, rest, head), rest[None] + expression, atol=1e-9)
    # a model with the right expression and a still head: wrong in the world, exact in the head's frame
    still = rest[None] + expression
    assert np.abs(still - posed).max() > 1e-3
    np.testing.assert_allclose(scores.in_head_frame(still, rest, head), scores.in_head_frame(posed, rest, head),
                               atol=1e-9)
    # a reflection is never returned
    assert np.allclose(np.linalg.det(scores.rigid_fit(rest[head], -posed[:, head])[0]), 1.0)
