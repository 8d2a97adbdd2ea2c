"""Speech -> per-frame rig controls: the known audio-motion relation of the synthetic clips.

Given phoneme timings (from TTS) and the 16 kHz audio, at ``fps`` (frame t covers [t/fps, (t+1)/fps)):

- ``jaw (T,)`` in [0, 1]: the viseme opening (:mod:`avatar_jax.data.visemes`) averaged over each
  frame's time window, then smoothed with a Gaussian of ``coarticulation_s`` (coarticulation);
- ``round (T,)``: lip rounding, same treatment;
- ``blink (T,)`` in [0, 1]: eyelid closure, blinks every 2-5 s (seeded), 150 ms each;
- ``nod (T,)``, ``yaw (T,)`` radians: a nod after each primary-stressed vowel scaled by that vowel's
  loudness (prosody), plus a slow seeded sway;
- ``beat (T, 2)`` radians: beat gestures on the louder half of the stressed vowels, with the subject's
  right arm on open vowels and the left arm on the others (a rule the audio determines, so a model can
  learn which hand beats, as it could from a diffusion teacher's gestures; no coin flip).

Everything is a pure function of (phonemes, audio, seed), so sync can be measured exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from avatar_jax.data import visemes


@dataclasses.dataclass(frozen=True)
class Controls:
    jaw: np.ndarray  # (T,)
    round: np.ndarray  # (T,)
    blink: np.ndarray  # (T,)
    nod: np.ndarray  # (T,) rad, head pitch (positive: chin down)
    yaw: np.ndarray  # (T,) rad
    beat: np.ndarray  # (T, 2) rad, arm raise of the subject's left / right arm

    @property
    def num_frames(self) -> int:
        return self.jaw.shape[0]


def _frame_average(phonemes, value, num_frames: int, fps: float, sub: int = 8) -> np.ndarray:
    """Mean of a piecewise-constant phoneme signal over each frame window, sampled ``sub`` times per frame."""
    times = (np.arange(num_frames * sub) + 0.5) / (fps * sub)
    out = np.zeros(times.size)
    for name, start, end in phonemes:
        out[(times >= start) & (times < end)] = value(name)
    return out.reshape(num_frames, sub).mean(1)


def _smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    if sigma_frames <= 0:
        return x
    r = int(np.ceil(3 * sigma_frames))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_frames) ** 2)
    k /= k.sum()
    return np.convolve(np.pad(x, r, mode="edge"), k, mode="valid")


def _pulse(times: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((times - centre) / width) ** 2)


def from_speech(phonemes: list[tuple[str, float, float]], audio: np.ndarray, num_frames: int, *, fps: float = 25.0,
                sample_rate: int = 16000, seed: int = 0, coarticulation_s: float = 0.03, nod_rad: float = 0.08,
                beat_rad: float = 0.35) -> Controls:
    """Controls for ``num_frames`` frames (see module doc)."""
    rng = np.random.default_rng(seed)
    jaw = np.clip(_smooth(_frame_average(phonemes, visemes.jaw_open, num_frames, fps), coarticulation_s * fps), 0, 1)
    rnd = np.clip(_smooth(_frame_average(phonemes, visemes.lip_round, num_frames, fps), coarticulation_s * fps), 0, 1)
    t = (np.arange(num_frames) + 0.5) / fps

    blink = np.zeros(num_frames)
    when = rng.uniform(0.3, 1.5)
    while when < num_frames / fps:
        blink = np.maximum(blink, np.clip(1.0 - np.abs(t - when) / 0.075, 0.0, 1.0))
        when += rng.uniform(2.0, 5.0)

    # loudness of every primary-stressed vowel, relative to the loudest one
    stressed = [(name, s, e) for name, s, e in phonemes
                if visemes.stress(name) == 2 and visemes.is_vowel(name) and e > s]
    level = np.array([np.sqrt(np.mean(audio[int(s * sample_rate):max(int(e * sample_rate), int(s * sample_rate) + 1)]
                                      .astype(np.float64) ** 2)) for _, s, e in stressed])
    level = level / level.max() if level.size and level.max() > 0 else level
    nod = np.zeros(num_frames)
    beat = np.zeros((num_frames, 2))
    median = float(np.median(level)) if level.size else 0.0
    for (name, s, _), lv in zip(stressed, level, strict=True):
        nod += nod_rad * lv * _pulse(t, s + 0.06, 0.08)
        if lv >= median:  # beats on the louder half of the stressed syllables
            hand = 1 if visemes.jaw_open(name) >= 0.7 else 0  # open vowel: right arm
            beat[:, hand] += beat_rad * lv * _pulse(t, s + 0.02, 0.12)
    phase = rng.uniform(0, 2 * np.pi, 2)
    nod += 0.015 * np.sin(2 * np.pi * 0.3 * t + phase[0])
    yaw = 0.04 * np.sin(2 * np.pi * 0.17 * t + phase[1])
    return Controls(jaw=jaw.astype(np.float32), round=rnd.astype(np.float32), blink=blink.astype(np.float32),
                    nod=nod.astype(np.float32), yaw=yaw.astype(np.float32), beat=beat.astype(np.float32))
