"""Offline sync: a known audio lag is recovered; envelope and mouth opening on known signals."""

import numpy as np
import pytest
from skimage import data

from avatar_jax.data import schema
from avatar_jax.errors import InputError
from avatar_jax.eval import sync

FPS, SR = 25.0, 16000


def talking(num_frames: int, seed: int = 0):
    """Noise whose loudness follows a random syllable-like envelope ``(T,)`` and that envelope."""
    rng = np.random.default_rng(seed)
    env = np.abs(np.convolve(rng.standard_normal(num_frames + 4), np.ones(3) / 3, mode="valid"))[:num_frames]
    bounds = schema.audio_bounds(np.arange(num_frames + 1), FPS, SR)
    gain = np.repeat(env, np.diff(bounds))
    return (0.3 * gain * rng.uniform(-1, 1, len(gain))).astype(np.float32), env


def face_track(opening: np.ndarray) -> np.ndarray:
    """Face landmarks ``(T,478,2)`` whose inner-lip gap / mouth width is ``opening``."""
    face = np.zeros((len(opening), 478, 2), np.float32)
    face[:, :] = (120.0, 150.0)
    face[:, schema.FACE_MOUTH_LEFT] = (140.0, 150.0)
    face[:, schema.FACE_MOUTH_RIGHT] = (100.0, 150.0)  # width 40 px
    face[:, schema.FACE_UPPER_LIP, 1] = 150.0 - 20.0 * opening
    face[:, schema.FACE_LOWER_LIP, 1] = 150.0 + 20.0 * opening
    return face


def test_envelope_is_the_rms_of_each_frame_span():
    audio = np.zeros(SR, np.float32)
    audio[640 * 3: 640 * 4] = 0.5  # frame 3 (640 samples per frame at 25 fps)
    env = sync.audio_envelope(audio, 25, FPS, SR)
    np.testing.assert_allclose(env[3], 0.5, rtol=1e-6)
    assert np.all(np.delete(env, 3) == 0)


@pytest.mark.parametrize("lag", [3, -2, 0])
def test_a_known_audio_lag_is_recovered(lag):
    audio, env = talking(120)
    opening = 0.05 + 0.5 * env / env.max()
    shifted = np.roll(opening, lag)  # the mouth moves `lag` frames after (lag > 0) the sound
    res = sync.offline_sync(audio, face=face_track(shifted), fps=FPS, sample_rate=SR, max_lag=6)
    assert res.lag == lag
    assert res.correlation > 0.9
    assert res.lags.tolist() == list(range(-6, 7))
    if lag:
        assert res.correlation_at_zero < res.correlation - 0.3


def test_frames_without_a_face_are_left_out():
    audio, env = talking(60, seed=1)
    opening = env / env.max()
    found = np.ones(60, bool)
    found[10:20] = False
    face = face_track(opening)
    face[10:20] = 0.0  # nothing detected there
    res = sync.offline_sync(audio, face=face, found=found, max_lag=3)
    assert res.lag == 0 and res.correlation > 0.95
    assert np.isnan(sync.mouth_opening(face, found)[10:20]).all()


def test_sync_bad_input():
    with pytest.raises(InputError, match="exactly one"):
        sync.offline_sync(np.zeros(SR))
    with pytest.raises(InputError, match="max_lag"):
        sync.lag_correlation(np.ones(5), np.ones(5), max_lag=4)
    with pytest.raises(InputError, match="cannot measure"):
        sync.lag_correlation(np.ones(20), np.ones(20), max_lag=2)  # nothing varies


def test_mouth_opening_detected_on_a_photo():
    """Face Mesh (MediaPipe venv) on the astronaut: a closed-lipped smile, a small finite opening."""
    a = data.astronaut()[:300, 100:400]
    frames = np.stack([a, np.zeros_like(a)])
    from avatar_jax.eval import mediapipe_runner

    out = mediapipe_runner.run("face", frames)
    opening = sync.mouth_opening(out["face"], out["found"])
    assert out["found"].tolist() == [1, 0]
    assert 0.0 <= opening[0] < 0.3 and np.isnan(opening[1])


def test_real_speech_against_the_rig_jaw_recovers_a_shift():
    """eSpeak speech and the synthetic rig's jaw opening from its phoneme timings (the data pipeline's
    teacher): they correlate, and delaying the jaw by 3 frames moves the measured lag by exactly 3."""
    from avatar_jax.audio.tts import synthesize
    from avatar_jax.data import motion

    audio, phonemes = synthesize("The quick brown fox jumps over the lazy dog while we talk about the weather.")
    num_frames = int(len(audio) / SR * FPS)
    jaw = motion.from_speech(phonemes, audio, num_frames).jaw
    base = sync.offline_sync(audio, face=face_track(jaw), max_lag=6)
    late = sync.offline_sync(audio, face=face_track(np.roll(jaw, 3)), max_lag=6)
    assert abs(base.lag) <= 1 and base.correlation > 0.4
    assert late.lag - base.lag == 3 and late.correlation > 0.4
