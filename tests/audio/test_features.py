"""Whisper log-mel parity with transformers, and frame-rate conversion on signals with known event times."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from transformers import WhisperFeatureExtractor
from transformers.audio_utils import mel_filter_bank

from avatar_jax.audio.features import (
    MEL_OFFSET_S,
    MEL_RATE,
    frame_rate_weights,
    log_mel_spectrogram,
    mel_filters,
    num_mel_frames,
    num_video_frames,
    to_frame_rate,
)
from avatar_jax.errors import InputError


def speechlike(rng, seconds=3.0):
    t = np.arange(int(16000 * seconds)) / 16000
    x = 0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.5 * t)) * (1 + np.sin(2 * np.pi * 3 * t))
    x = x + 0.03 * rng.standard_normal(t.size)
    x[int(0.4 * t.size):int(0.5 * t.size)] = 0.0  # a pause
    return x.astype(np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_transformers(n_mels):
    ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0.0, max_frequency=8000.0,
                          sampling_rate=16000, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(mel_filters(n_mels), ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("padding", ["longest", "max_length"])
def test_log_mel_matches_whisper_feature_extractor(rng, n_mels, padding):
    # measured max |diff| 2.4e-6 (80 mels) and 5.5e-6 (128 mels), float32 vs upstream float64 numpy
    x = speechlike(rng)
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    ref = fe(x, sampling_rate=16000, padding=padding, return_tensors="np")["input_features"][0].T
    ours = log_mel_spectrogram(x, n_mels, pad_to_samples=480000 if padding == "max_length" else None)
    assert ours.shape == ref.shape == ((3000 if padding == "max_length" else 300), n_mels)
    np.testing.assert_allclose(np.asarray(ours), ref, atol=2e-5, rtol=0)


def test_log_mel_frames_silence_and_short_input():
    assert log_mel_spectrogram(np.zeros(16123, np.float32)).shape == (num_mel_frames(16123), 80) == (100, 80)
    np.testing.assert_allclose(np.asarray(log_mel_spectrogram(np.zeros(1600, np.float32))), -1.5)
    with pytest.raises(InputError, match="at least 201 samples"):
        log_mel_spectrogram(np.zeros(100, np.float32))


def test_frame_weights_rows_sum_to_one():
    for rate, fps in [(50.0, 25.0), (100.0, 30.0), (50.0, 29.97), (10.0, 25.0)]:
        idx, w = frame_rate_weights(123, rate, fps, 80, 0.0)
        np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
        assert idx.min() >= 0 and idx.max() <= 122


def test_step_event_exact_average():
    # a step at tau: the 50 Hz box feature i holds the fraction of its box after tau;
    # averaging boxes is exact, so frame t must equal the fraction of [t/25, (t+1)/25) after tau.
    tau, rate, fps, n = 1.234, 50.0, 25.0, 150
    i = np.arange(n)
    f = np.clip(((i + 1) / rate - tau) * rate, 0, 1)[:, None].repeat(3, 1)
    out = np.asarray(to_frame_rate(f, rate, fps, 75))
    t = np.arange(75)
    expected = np.clip(((t + 1) / fps - tau) * fps, 0, 1)
    np.testing.assert_allclose(out[:, 0], expected, atol=1e-6)
    assert out[30, 0] == pytest.approx(0.15, abs=1e-6)  # 1.234 s is 85% through frame 30
    assert np.all(out[:30] == 0) and np.all(out[31:] == 1)


def test_impulse_lands_in_its_frame_at_fractional_fps():
    # 100 Hz impulse at feature 435 (4.35-4.36 s) -> at 29.97 fps frames 130.37-130.67: inside frame 130
    f = np.zeros((700, 2), np.float32)
    f[435] = 1.0
    out = np.asarray(to_frame_rate(f, 100.0, 29.97, 209))
    assert np.argmax(out[:, 0]) == 130
    assert out[:, 0].sum() * 100 / 29.97 == pytest.approx(1.0, rel=1e-5)  # mass conserved


def test_audio_event_to_video_frame_end_to_end():
    # a 20 ms tone burst at 2.130 s in silence: its log-mel energy must land in frame 53 (2.12-2.16 s)
    x = np.zeros(16000 * 3, np.float32)
    start = int(2.130 * 16000)
    x[start:start + 320] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(320) / 16000)
    mel = log_mel_spectrogram(x)
    frames = to_frame_rate(mel, MEL_RATE, 25.0, num_video_frames(x.size, 25.0), offset_s=MEL_OFFSET_S)
    assert frames.shape == (75, 80)
    assert int(jnp.argmax(frames.mean(1))) == 53


def test_upsampling_holds_and_tail_holds_last():
    f = np.arange(5, dtype=np.float32)[:, None]  # 10 Hz, covers 0.5 s
    out = np.asarray(to_frame_rate(f, 10.0, 25.0, 15))[:, 0]  # 0.6 s of frames: last 2.5 past the end
    # frame t is [0.04t, 0.04t + 0.04); feature i is [0.1i, 0.1i + 0.1): frames 2 and 7 straddle two features
    np.testing.assert_allclose(out[:12], [0, 0, 0.5, 1, 1, 2, 2, 2.5, 3, 3, 4, 4], atol=1e-6)
    # frame 12 ([0.48, 0.52)) is half covered: averaged over the covered half; 13, 14 hold the last
    np.testing.assert_allclose(out[12:], [4, 4, 4])


def test_to_frame_rate_batched_jit_grad(rng):
    f = jnp.asarray(rng.standard_normal((2, 100, 4)), jnp.float32)
    fn = jax.jit(lambda x: to_frame_rate(x, 50.0, 25.0, 50))
    out = fn(f)
    assert out.shape == (2, 50, 4)
    np.testing.assert_allclose(np.asarray(out[1, 7]), np.asarray((f[1, 14] + f[1, 15]) / 2), atol=1e-6)
    g = jax.grad(lambda x: fn(x).sum())(f)
    np.testing.assert_allclose(np.asarray(g), 0.5, atol=1e-6)


def test_num_video_frames_and_errors():
    assert num_video_frames(16000, 25.0) == 25
    assert num_video_frames(16001, 25.0) == 26
    assert num_video_frames(16000 * 10, 29.97) == 300
    with pytest.raises(InputError):
        to_frame_rate(np.zeros((0, 3)), 50.0, 25.0, 10)
    with pytest.raises(InputError):
        to_frame_rate(np.zeros(10), 50.0, 25.0, 10)
