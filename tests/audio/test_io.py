"""load_audio: formats, mixing, resampling, and every bad-input policy (all audio generated here)."""

import subprocess
import tracemalloc
import warnings

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf

from avatar_jax.audio.io import (
    AudioWarning,
    load_audio,
    load_audio_with_report,
    normalize_utterance,
    require_speech_energy,
)
from avatar_jax.audio.resample import resample
from avatar_jax.errors import InputError


def tone(freq, sr, seconds, amp=0.5):
    t = np.arange(int(round(sr * seconds))) / sr
    return amp * np.sin(2 * np.pi * freq * t)


def dominant_freq(x, sr=16000):
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return np.fft.rfftfreq(x.size, 1 / sr)[np.argmax(spec)]


def quiet_load(src, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)  # these inputs must not warn
        return load_audio_with_report(src, **kw)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_24")])
def test_lossless_file_equals_resampled_source(tmp_path, fmt, subtype):
    x = tone(440.0, 44100, 1.0) + tone(3000.0, 44100, 1.0, 0.2)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, x, 44100, format=fmt, subtype=subtype)
    audio, sr, rep = quiet_load(path)
    assert sr == 16000 and audio.dtype == np.float32 and audio.shape == (16000,)
    assert rep.decoder == "soundfile" and rep.source_rate == 44100 and rep.resampled and not rep.upsampled
    tol = 1e-4 if subtype == "PCM_16" else 1e-6  # 16-bit quantisation vs float
    np.testing.assert_allclose(audio, resample(x, 44100, 16000), atol=tol)


def _ffmpeg_encode(src, dst, *args):
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), *args, str(dst)], check=True)


@pytest.mark.parametrize("ext,decoder,args", [
    ("ogg", "soundfile", ["-c:a", "libvorbis"]),
    ("mp3", "soundfile", ["-c:a", "libmp3lame", "-b:a", "128k"]),
    ("m4a", "ffmpeg", ["-c:a", "aac", "-b:a", "128k"]),
])
def test_lossy_formats(tmp_path, ext, decoder, args):
    x = tone(440.0, 44100, 2.0)
    sf.write(tmp_path / "src.wav", np.stack([x, x], 1), 44100)  # stereo source
    _ffmpeg_encode(tmp_path / "src.wav", tmp_path / f"a.{ext}", *args)
    audio, sr, rep = quiet_load(tmp_path / f"a.{ext}")
    assert rep.decoder == decoder and rep.channels == 2 and rep.source_rate == 44100
    assert abs(audio.size / sr - 2.0) < 0.1  # codec priming/padding adds a few ms
    assert abs(dominant_freq(audio) - 440.0) < 1.0
    rms_db = 20 * np.log10(np.sqrt(np.mean(audio[1600:-1600] ** 2)) / (0.5 / np.sqrt(2)))
    assert abs(rms_db) < 0.5


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = tone(440.0, 16000, 1.0), tone(1000.0, 16000, 1.0, 0.3)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    audio, _, rep = quiet_load(tmp_path / "s.wav")
    assert rep.channels == 2 and not rep.resampled
    np.testing.assert_allclose(audio, (left + right) / 2, atol=1e-6)


def test_arrays_stereo_layouts_and_int_scaling():
    x = tone(440.0, 16000, 0.5)
    a, _, _ = quiet_load(np.stack([x, -x * 0.5], 1))  # (S, C)
    b, _, _ = quiet_load(np.stack([x, -x * 0.5], 0))  # (C, S)
    np.testing.assert_allclose(a, 0.25 * x, atol=1e-7)
    np.testing.assert_array_equal(a, b)
    c, _, _ = quiet_load((x * 32768).astype(np.int16))
    np.testing.assert_allclose(c, x, atol=1 / 32768)


def test_8khz_is_upsampled_and_reported(tmp_path):
    sf.write(tmp_path / "tel.wav", tone(1000.0, 8000, 1.5), 8000)
    with pytest.warns(AudioWarning, match="8000 Hz: resampled up"):
        audio, sr, rep = load_audio_with_report(tmp_path / "tel.wav")
    assert rep.upsampled and rep.source_rate == 8000 and audio.shape == (24000,)
    assert abs(dominant_freq(audio) - 1000.0) < 1.0


def test_sample_rate_for_array_and_mismatch_for_file(tmp_path):
    audio, _ = load_audio(tone(440.0, 22050, 1.0), sample_rate=22050)
    assert audio.shape == (16000,)
    sf.write(tmp_path / "a.wav", tone(440.0, 22050, 0.1), 22050)
    with pytest.raises(InputError, match="22050 Hz but sample_rate=16000"):
        load_audio(tmp_path / "a.wav", sample_rate=16000)


def test_empty_inputs(tmp_path):
    with pytest.raises(InputError, match="no audio samples"):
        load_audio(np.zeros(0, np.float32))
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_audio(tmp_path / "zero.wav")
    sf.write(tmp_path / "noframes.wav", np.zeros(0), 16000)  # valid header, no data
    with pytest.raises(InputError, match="no audio samples"):
        load_audio(tmp_path / "noframes.wav")
    with pytest.raises(InputError, match="not found"):
        load_audio(tmp_path / "missing.wav")


def test_silent_audio_allowed_with_flag_but_not_for_driving():
    with pytest.warns(AudioWarning, match="silent"):
        audio, _, rep = load_audio_with_report(np.zeros(16000, np.float32))
    assert rep.silent and rep.rms_dbfs == float("-inf") and np.all(audio == 0)
    with pytest.raises(InputError, match="no speech energy"):
        require_speech_energy(audio)
    require_speech_energy(tone(200.0, 16000, 1.0, 0.05))  # -29 dBFS speech-like level passes


def test_clipped_audio_reports_fraction():
    x = np.clip(tone(440.0, 16000, 1.0, amp=2.0), -1, 1)
    expected = np.mean(np.abs(x) >= 0.999)
    with pytest.warns(AudioWarning, match="full scale"):
        _, _, rep = load_audio_with_report(x)
    assert rep.clipped_fraction == pytest.approx(expected) and 0.6 < expected < 0.7
    # a clean signal reports ~0 and does not warn
    _, _, rep = quiet_load(tone(440.0, 16000, 1.0, amp=0.9))
    assert rep.clipped_fraction == 0.0


def test_float_beyond_full_scale_is_rescaled():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        audio, _, rep = load_audio_with_report(tone(437.1, 16000, 1.0, amp=4.0))
    assert [str(w.message).split(": ", 1)[1][:15] for w in caught] == ["samples exceed "]
    assert rep.rescaled and rep.peak == pytest.approx(4.0, rel=1e-3) and rep.clipped_fraction < 1e-3
    assert np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0.999


def test_wrong_format_names_file_and_formats(tmp_path):
    import imageio.v3 as iio

    fake = tmp_path / "picture.wav"
    iio.imwrite(tmp_path / "p.png", np.zeros((8, 8, 3), np.uint8))
    fake.write_bytes((tmp_path / "p.png").read_bytes())
    with pytest.raises(InputError, match=r"picture\.wav.*Supported: wav, flac"):
        load_audio(fake)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(InputError, match="junk.mp3"):
        load_audio(junk)


def test_nan_samples_rejected_with_position():
    x = tone(440.0, 16000, 1.0)
    x[1234] = np.nan
    x[2000] = np.inf
    with pytest.raises(InputError, match="2 NaN/inf sample.*sample 1234"):
        load_audio(x)


def test_normalize_utterance_matches_upstream(rng):
    from transformers import Wav2Vec2FeatureExtractor

    fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    a, b = rng.standard_normal(3000) * 0.1 + 0.02, rng.standard_normal(2000) * 0.3
    ref = fe([a, b], sampling_rate=16000, padding=True, return_tensors="np")["input_values"]
    batch = np.zeros((2, 3000))
    batch[0], batch[1, :2000] = a, b
    ours = normalize_utterance(batch, lengths=np.array([3000, 2000]))
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    single = normalize_utterance(a)
    assert abs(single.mean()) < 1e-6 and abs(single.std() - 1) < 1e-5
    assert np.all(normalize_utterance(np.zeros(100)) == 0)  # eps keeps silence finite


def test_ten_minutes_with_bounded_memory(tmp_path):
    sr, minutes = 44100, 10
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as f:
        for i in range(minutes * 60):
            f.write(tone(220.0 + i % 7 * 50, sr, 1.0, 0.3))
    tracemalloc.start()
    audio, _, rep = load_audio_with_report(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert audio.shape == (minutes * 60 * 16000,) and rep.source_samples == minutes * 60 * sr
    out_mb = audio.nbytes / 2**20
    # the output (37 MB) exists twice at the final concatenate; the rest must be block-sized.
    # Reading the whole source as float64 alone would take 202 MB.
    print(f"10 min load: peak traced {peak / 2**20:.0f} MB for a {out_mb:.0f} MB output")
    assert peak / 2**20 < 2 * out_mb + 64, peak / 2**20
    assert abs(dominant_freq(audio[16000 * 3:16000 * 4]) - 370.0) < 1.5


def test_float_clipped_above_full_scale_reports_flat_tops():
    x = np.clip(tone(440.0, 16000, 1.0, amp=3.0), -1.5, 1.5)
    with pytest.warns(AudioWarning, match="full scale"), pytest.warns(AudioWarning, match="scaled down"):
        _, _, rep = load_audio_with_report(x)
    assert rep.rescaled and rep.clipped_fraction == pytest.approx(np.mean(np.abs(x) >= 1.5))
