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
