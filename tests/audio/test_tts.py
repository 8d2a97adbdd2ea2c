"""eSpeak NG text to speech: audio, durations, phoneme/word timings, voices, rate, errors, thread safety."""

import threading

import numpy as np
import pytest

from avatar_jax.audio.tts import SAMPLE_RATE, synthesize, synthesize_detailed
from avatar_jax.errors import InputError

SENTENCE = "Hello world, this is a test of the talking avatar."


def spectral_centroid(x):
    spec = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
    return float((spec * freqs).sum() / spec.sum())


def test_audio_and_plausible_duration():
    audio, phonemes = synthesize(SENTENCE)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.05 < np.abs(audio).max() <= 1.0
    rms = np.sqrt(np.mean(audio**2))
    assert rms > 0.02
    words = len(SENTENCE.split())
    duration = audio.size / SAMPLE_RATE
    # espeak's default 175 words/min is ~2.9 words/s; allow 1.5 - 6 words/s
    assert words / 6 < duration < words / 1.5, duration
    assert len(phonemes) >= 25


def test_phoneme_timings_monotonic_and_inside_audio():
    speech = synthesize_detailed(SENTENCE)
    starts = np.array([s for _, s, _ in speech.phonemes])
    ends = np.array([e for _, _, e in speech.phonemes])
    assert np.all(np.diff(starts) >= 0) and np.all(ends >= starts)
    np.testing.assert_allclose(ends[:-1], starts[1:])  # contiguous
    assert starts[0] >= 0 and ends[-1] <= speech.duration_s + 1e-3
    assert ends[-1] > 0.9 * speech.duration_s
    names = [p for p, _, _ in speech.phonemes]
    assert "h" in names and "_:" in names  # /h/ of "hello" and the comma pause
    # words come out in order, with their text, non-overlapping
    # espeak merges clitic function words into the next word event ("of the" -> one event)
    words = [w for w, _, _ in speech.words]
    assert words == ["Hello", "world", "this", "is", "a", "test", "of", "talking", "avatar"], words
    w_starts = np.array([s for _, s, _ in speech.words])
    w_ends = np.array([e for _, _, e in speech.words])
    assert np.all(w_ends > w_starts) and np.all(w_starts[1:] >= w_ends[:-1] - 1e-9)


def test_speech_energy_is_where_the_phonemes_are():
    speech = synthesize_detailed("Open the door. Please.")
    pauses = [(s, e) for p, s, e in speech.phonemes if p == "_:" and e - s > 0.1]
    assert pauses, speech.phonemes
    s, e = pauses[0]
    a = speech.audio
    quiet = np.sqrt(np.mean(a[int(s * SAMPLE_RATE) + 400:int(e * SAMPLE_RATE) - 400] ** 2))
    loud = np.sqrt(np.mean(a[: int(s * SAMPLE_RATE)] ** 2))
    assert quiet < 0.1 * loud


def test_two_sentences_differ():
    a1, p1 = synthesize("The quick brown fox.")
    a2, p2 = synthesize("Jumps over the lazy dog near the river bank.")
    assert [p for p, _, _ in p1] != [p for p, _, _ in p2]
    assert a2.size > a1.size * 1.3


def same_speech(a, b, tol_s=0.025):
    """Same phonemes, timings within tol_s, same length within tol_s."""
    (audio_a, ph_a), (audio_b, ph_b) = a, b
    assert [p for p, _, _ in ph_a] == [p for p, _, _ in ph_b]
    np.testing.assert_allclose([s for _, s, _ in ph_a], [s for _, s, _ in ph_b], atol=tol_s)
    assert abs(audio_a.size - audio_b.size) <= tol_s * SAMPLE_RATE


def test_voices_differ_and_repeat():
    base, ph = synthesize("Good morning everyone", voice="en-us")
    same_speech((base, ph), synthesize("Good morning everyone", voice="en-us"))
    female, _ = synthesize("Good morning everyone", voice="en-us+f3")
    british, pb = synthesize("Good morning everyone", voice="en")
    n = min(base.size, female.size)
    assert base.size != female.size or np.abs(base[:n] - female[:n]).max() > 0.1
    assert spectral_centroid(female) > spectral_centroid(base) * 1.05  # a higher, brighter voice
    assert not np.array_equal(base[: min(base.size, british.size)], british[: min(base.size, british.size)])


def test_speech_is_bit_repeatable_whatever_was_spoken_before():
    """libespeak-ng's pitch flutter carried over between calls (a sentence's waveform depended on the process's
    earlier speech: a test alone vs after others); each call now runs a fresh instance of the library."""
    first = synthesize_detailed("Good morning everyone", voice="en+m3")
    synthesize("Jumps over the lazy dog near the river bank.", voice="en-us+f3", pitch=70)
    again = synthesize_detailed("Good morning everyone", voice="en+m3")
    np.testing.assert_array_equal(again.audio, first.audio)
    assert again.phonemes == first.phonemes and again.words == first.words


def test_rate_changes_duration():
    slow, _ = synthesize(SENTENCE, rate_wpm=120)
    fast, _ = synthesize(SENTENCE, rate_wpm=300)
    assert slow.size > 1.6 * fast.size


def test_errors():
    with pytest.raises(InputError, match="unknown espeak voice"):
        synthesize("hello", voice="xx-notavoice")
    with pytest.raises(InputError, match="empty"):
        synthesize("   ")
    with pytest.raises(InputError):
        synthesize("hello", rate_wpm=10)
    synthesize("hello", voice="en-us")  # the failed voice left the engine usable


def test_thread_safe():
    texts = ["one two three", "four five six seven", "eight nine", "ten eleven twelve thirteen fourteen"]
    expected = [synthesize(t) for t in texts]
    results = [None] * 8
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        results[i] = synthesize(texts[i % 4])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, r in enumerate(results):  # interleaved synthesis would mix chunks and events across texts
        same_speech(r, expected[i % 4])


def test_this_process_never_loads_libespeak(monkeypatch):
    """Each call speaks in a process of its own (a fresh library state every call), so this process never loads
    libespeak-ng, nor has to unload it."""
    import ctypes

    loaded = []
    real = ctypes.CDLL.__init__

    def record(self, name, *args, **kwargs):
        loaded.append(str(name))
        real(self, name, *args, **kwargs)

    monkeypatch.setattr(ctypes.CDLL, "__init__", record)
    audio, phonemes = synthesize("One more sentence.", voice="en-us")
    assert audio.size > 8000 and phonemes
    assert not [n for n in loaded if "espeak" in n]
    with open("/proc/self/maps") as f:
        assert "libespeak-ng" not in f.read()
