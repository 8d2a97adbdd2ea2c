"""The rig's beat gestures follow the speech deterministically: which hand beats is set by the vowel."""

import numpy as np

from avatar_jax.data import motion


def test_beat_hand_follows_the_vowel_not_a_seed():
    phonemes = [("'a", 0.0, 0.2), ("m", 0.2, 0.3), ("'i:", 0.3, 0.5), ("'a", 0.6, 0.8)]
    audio = np.full(16000, 0.1, np.float32)
    runs = [motion.from_speech(phonemes, audio, 25, seed=s) for s in (0, 1, 7)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.beat, runs[0].beat)
    beat = runs[0].beat
    t = (np.arange(25) + 0.5) / 25
    # open vowels ('a) beat with the right arm (column 1), the close vowel ('i:) with the left
    assert beat[np.argmin(np.abs(t - 0.02)), 1] > 0.2 and beat[np.argmin(np.abs(t - 0.02)), 0] < 0.02
    assert beat[np.argmin(np.abs(t - 0.32)), 0] > 0.2


def test_blinks_fall_at_pauses_and_in_long_speech_not_at_random():
    # speech 0-1 s, a 0.5 s pause, speech 1.5-8 s (stressed vowels every 0.5 s), then silence to 14 s
    phonemes = [("'a", 0.0, 1.0), ("_", 1.0, 1.5)]
    phonemes += [("'i:" if k % 2 else "'a", 1.5 + 0.5 * k, 2.0 + 0.5 * k) for k in range(13)]
    times = motion.blink_times(phonemes, 14.0)
    # one 0.1 s into the first pause; the 6.5 s stretch of speech blinks on the first stressed vowel 5 s
    # after that; the final silence blinks at its onset and then every 4 s
    np.testing.assert_allclose(times, [1.1, 6.55, 8.1, 12.1], atol=1e-9)
    assert min(np.diff(times)) >= motion.BLINK_GAP_S
    # a comma-length gap (0.15 s) is no phrase boundary; no speech at all: no blink
    assert motion.blink_times([("'a", 0.0, 1.0), ("'a", 1.15, 2.0)], 2.0) == []
    assert motion.blink_times([], 10.0) == []
    audio = np.full(14 * 16000, 0.1, np.float32)
    c = motion.from_speech(phonemes, audio, 350)
    t = (np.arange(350) + 0.5) / 25
    assert c.blink[np.argmin(np.abs(t - 1.1))] > 0.7 and c.blink[np.argmin(np.abs(t - 4.0))] == 0.0
    np.testing.assert_array_equal(c.blink, motion.from_speech(phonemes, audio, 350, seed=5).blink)


def test_head_turns_and_lifts_with_loudness():
    audio = np.zeros(4 * 16000, np.float32)
    audio[:16000] = 0.2 * np.sin(np.arange(16000) * 0.3)  # loud first second, then silence
    open_ = motion.from_speech([("'a", 0.1, 0.3), ("'a", 0.5, 0.7)], audio, 100)
    quiet = motion.from_speech([("'a", 0.1, 0.3), ("'a", 0.5, 0.7)], np.zeros_like(audio), 100)
    assert open_.yaw[12] > 0.015 and abs(quiet.yaw).max() < 1e-6  # the turn follows the loudness, not the text
    assert abs(open_.yaw[-1]) < 1e-3  # back to the front in the silence
    # the chin lifts (negative pitch) while it is loud, not in the silence, apart from the stressed-vowel nods
    assert open_.nod[20] < open_.nod[-1] - 0.01 and abs(open_.nod[-1]) < 1e-3
