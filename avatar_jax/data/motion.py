"""Speech -> per-frame rig controls: the known audio-motion relation of the synthetic clips.

Given phoneme timings (from TTS) and the 16 kHz audio, at ``fps`` (frame t covers [t/fps, (t+1)/fps)):

- ``jaw (T,)`` in [0, 1]: the viseme opening (:mod:`avatar_jax.data.visemes`) averaged over each
  frame's time window, then smoothed with a Gaussian of ``coarticulation_s`` (coarticulation);
- ``round (T,)``: lip rounding, same treatment;
- ``blink (T,)`` in [0, 1]: eyelid closure, 150 ms blinks at prosodic events (people blink at phrase
  boundaries and after stressed words): one 0.1 s into every pause (>= ``PAUSE_S`` without a spoken
  phoneme, the phrase boundary), another every ``BLINK_SILENCE_S`` s while the pause lasts, and, in a
  stretch of speech with no pause for ``BLINK_SPEECH_S`` s, one on the next primary-stressed vowel; never
  two within ``BLINK_GAP_S`` s. Sentences of 2-5 s with pauses between them give 12-30 blinks a
  minute, the human range;
- ``nod (T,)`` radians, head pitch: a nod after each primary-stressed vowel scaled by its loudness
  (prosody), plus a slow lift of the chin with the loudness envelope (``ENVELOPE_S`` smoothing);
- ``yaw (T,)`` radians: a slow turn (up to ``yaw_rad``) with the loudness envelope smoothed over
  ``YAW_S`` s: the head turns while a phrase is spoken and comes back to the front in the pauses. (A turn
  towards the open-vowel side, set by the stressed vowels, was tried first: the models did not learn it on
  unseen speech and moved the head worse than standing still, in the motion study and in training.)
- ``beat (T, 2)`` radians: beat gestures on the louder half of the stressed vowels, with the subject's
  right arm on open vowels and the left arm on the others.

No seed and no random phase: every gesture is a deterministic function of (phonemes, audio), as a
diffusion teacher's gestures follow the speech, so a model can learn them from the audio and sync can be
measured exactly. (Before, blinks fell at random every 2-5 s and the head swayed with a random phase.)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from avatar_jax.data import visemes

PAUSE_S = 0.25  # a gap between spoken phonemes this long is a phrase boundary (eSpeak's commas are 0.15 s)
BLINK_DELAY_S = 0.1  # blink peak after a pause starts
BLINK_HALF_S = 0.075  # half duration of a blink (150 ms in all)
BLINK_GAP_S = 1.0  # no two blinks closer than this
BLINK_SILENCE_S = 4.0  # repeat blinks during a long pause
BLINK_SPEECH_S = 5.0  # speech this long without a blink: blink on the next stressed vowel
ENVELOPE_S = 0.3  # smoothing (Gaussian sigma) of the loudness envelope that lifts the chin
YAW_S = 0.6  # smoothing (Gaussian sigma) of the loudness envelope that turns the head


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


def blink_times(phonemes: list[tuple[str, float, float]], duration: float) -> list[float]:
    """Peak times (s) of the blinks in ``[0, duration)`` (the rule in the module doc)."""
    spans = sorted(visemes.speech_spans(phonemes))
    stressed = sorted(s for name, s, e in phonemes if visemes.stress(name) == 2 and visemes.is_vowel(name) and e > s)
    pauses, covered = [], 0.0  # (start, end) of every phrase boundary; the clip's lead-in is not one
    for a, b in spans:
        if covered > 0 and a - covered >= PAUSE_S:
            pauses.append((covered, a))
        covered = max(covered, b)
    if spans and duration - covered >= PAUSE_S:
        pauses.append((covered, duration))
    candidates = []
    for a, b in pauses:
        candidates += list(np.arange(a + BLINK_DELAY_S, b, BLINK_SILENCE_S))
    candidates.sort()
    out, last, k = [], 0.0, 0  # the clip starts just after a blink
    for when in candidates + [np.inf]:
        # stretches of speech before this pause blink that went BLINK_SPEECH_S without one
        while k < len(stressed) and stressed[k] < when:
            if stressed[k] - last >= BLINK_SPEECH_S:
                out.append(stressed[k] + 0.05)
                last = out[-1]
            k += 1
        if when < duration and when - last >= BLINK_GAP_S:
            out.append(float(when))
            last = when
    return [t for t in out if t < duration]


def from_speech(phonemes: list[tuple[str, float, float]], audio: np.ndarray, num_frames: int, *, fps: float = 25.0,
                sample_rate: int = 16000, seed: int = 0, coarticulation_s: float = 0.03, nod_rad: float = 0.08,
                beat_rad: float = 0.35, yaw_rad: float = 0.03, lift_rad: float = 0.02) -> Controls:
    """Controls for ``num_frames`` frames (see module doc). ``seed`` is accepted for old callers and unused:
    the controls are a function of the speech alone."""
    del seed
    jaw = np.clip(_smooth(_frame_average(phonemes, visemes.jaw_open, num_frames, fps), coarticulation_s * fps), 0, 1)
    rnd = np.clip(_smooth(_frame_average(phonemes, visemes.lip_round, num_frames, fps), coarticulation_s * fps), 0, 1)
    t = (np.arange(num_frames) + 0.5) / fps

    blink = np.zeros(num_frames)
    for when in blink_times(phonemes, num_frames / fps):
        blink = np.maximum(blink, np.clip(1.0 - np.abs(t - when) / BLINK_HALF_S, 0.0, 1.0))

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
    # Loudness envelope: frame RMS in dB over the clip's loud frames, 0 at -30 dB and below, 1 at the top.
    spf = sample_rate / fps
    a = np.zeros(int(round(num_frames * spf)), np.float64)
    a[:min(a.size, audio.size)] = audio[:a.size]
    edges = np.round(np.arange(num_frames + 1) * spf).astype(int)
    rms = np.array([np.sqrt(np.mean(a[edges[i]:max(edges[i + 1], edges[i] + 1)] ** 2)) for i in range(num_frames)])
    ref = np.percentile(rms, 95) if num_frames and np.percentile(rms, 95) > 0 else 1.0
    loud = np.clip(1.0 + 20.0 * np.log10(np.maximum(rms / ref, 1e-6)) / 30.0, 0.0, 1.0)
    nod -= lift_rad * _smooth(loud, ENVELOPE_S * fps)
    yaw = yaw_rad * _smooth(loud, YAW_S * fps)
    return Controls(jaw=jaw.astype(np.float32), round=rnd.astype(np.float32), blink=blink.astype(np.float32),
                    nod=nod.astype(np.float32), yaw=yaw.astype(np.float32), beat=beat.astype(np.float32))
