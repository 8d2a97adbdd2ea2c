"""Polyphase resampler: parity with scipy.signal.resample_poly, streaming, passband, alias rejection."""

import numpy as np
import pytest
import scipy.signal

from avatar_jax.audio.resample import StreamResampler, lowpass_filter, ratio, resample, resample_blocks
from avatar_jax.errors import InputError

RATES = [(44100, 16000), (8000, 16000), (22050, 16000), (48000, 16000), (11025, 16000), (16000, 44100)]


@pytest.mark.parametrize("sr_in,sr_out", RATES)
def test_matches_scipy_resample_poly(rng, sr_in, sr_out):
    # with scipy's default design (10 lobes, Kaiser beta 5) the two agree to float32 rounding
    x = rng.standard_normal(4999)
    up, down = ratio(sr_in, sr_out)
    ours = resample(x, sr_in, sr_out, zero_crossings=10, beta=5.0)
    ref = scipy.signal.resample_poly(x, up, down)
    assert ours.shape == ref.shape == (-(-x.size * up // down),)
    np.testing.assert_allclose(ours, ref, atol=5e-7, rtol=0)


def test_filter_matches_firwin():
    h = lowpass_filter(160, 441, 16, 8.0)
    ref = scipy.signal.firwin(2 * 16 * 441 + 1, 1 / 441, window=("kaiser", 8.0))
    np.testing.assert_allclose(h, ref, atol=1e-15)


@pytest.mark.parametrize("sr_in,sr_out", [(44100, 16000), (8000, 16000), (22050, 16000)])
def test_stream_equals_one_shot(rng, sr_in, sr_out):
    x = rng.standard_normal(6007)
    sizes = [1, 5, 1000, 2, 3001, 1998]
    blocks = np.split(x, np.cumsum(sizes)[:-1])
    np.testing.assert_array_equal(resample_blocks(blocks, sr_in, sr_out), resample(x, sr_in, sr_out))


def test_stream_push_after_flush_raises():
    rs = StreamResampler(8000, 16000)
    rs.push(np.ones(10))
    rs.flush()
    with pytest.raises(RuntimeError):
        rs.push(np.ones(3))


def _tone(freq, sr, seconds=1.0):
    t = np.arange(int(sr * seconds)) / sr
    return np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize("sr_in", [44100, 22050, 48000])
@pytest.mark.parametrize("freq", [300.0, 1000.0, 5000.0, 6500.0])
def test_passband_tone_kept(sr_in, freq):
    y = resample(_tone(freq, sr_in), sr_in, 16000)
    ref = _tone(freq, 16000)[: y.size]
    core = slice(800, y.size - 800)  # away from the zero-extended edges
    # amplitude and phase preserved: < 0.1% error up to 6.5 kHz (transition starts ~7 kHz)
    np.testing.assert_allclose(y[core], ref[core], atol=1e-3)


def _db(x):
    return 20 * np.log10(np.sqrt(np.mean(np.square(x))) + 1e-30)


@pytest.mark.parametrize("sr_in", [44100, 48000, 22050])
def test_sine_sweep_above_nyquist_is_suppressed(sr_in):
    # a sweep from 9.5 kHz to just below the input Nyquist would alias into 0-8 kHz; it must vanish
    seconds = 2.0
    t = np.arange(int(sr_in * seconds)) / sr_in
    sweep = scipy.signal.chirp(t, f0=9500, t1=seconds, f1=0.49 * sr_in, method="linear")
    y = resample(sweep, sr_in, 16000)
    core = y[1600:-1600]
    assert _db(core) - _db(sweep) < -70.0
    # scipy's default (beta 5) leaves much more alias in than ours
    naive = resample(sweep, sr_in, 16000, zero_crossings=10, beta=5.0)[1600:-1600]
    assert _db(naive) > _db(core) + 10.0


def test_sweep_below_nyquist_is_kept():
    sr_in, seconds = 44100, 2.0
    t = np.arange(int(sr_in * seconds)) / sr_in
    sweep = scipy.signal.chirp(t, f0=100, t1=seconds, f1=6000, method="linear")
    y = resample(sweep, sr_in, 16000)
    assert abs(_db(y[1600:-1600]) - _db(sweep[4410:-4410])) < 0.05


def test_upsample_8k_has_no_imaging():
    # 8 kHz -> 16 kHz: a 3 kHz tone must not leave an image at 8 - 3 = 5 kHz
    y = resample(_tone(3000.0, 8000, 2.0), 8000, 16000)[800:-800]
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    freqs = np.fft.rfftfreq(y.size, 1 / 16000)
    peak = spec[np.argmin(np.abs(freqs - 3000))]
    image = spec[np.argmin(np.abs(freqs - 5000))]
    assert 20 * np.log10(image / peak) < -80.0


def test_bad_rates_and_shapes():
    with pytest.raises(InputError):
        ratio(0, 16000)
    with pytest.raises(InputError):
        ratio(44100.5, 16000)
    with pytest.raises(InputError):
        resample(np.zeros((10, 2)), 44100, 16000)
