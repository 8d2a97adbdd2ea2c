"""Text to speech with eSpeak NG (``espeakng-loader`` wheel: bundled libespeak-ng and its data), via ctypes.

:func:`synthesize` returns 16 kHz mono float32 audio (espeak's 22050 Hz resampled by our polyphase
filter) and phoneme timings ``[(phoneme, start_s, end_s)]``; :func:`synthesize_detailed` adds word
timings. Phonemes are espeak's ASCII mnemonics (``'oU``, ``3:``...; a leading ``'``/``,`` marks
stress); pauses are the phonemes ``_`` and ``_:``. A phoneme starts at the audio sample espeak reports
for its event and ends where the next one starts (the last one at the end of the audio).

Voices: an espeak language (``"en-us"``, ``"en"`` = British, ``"en-gb-scotland"``, ``"de"``, ...),
optionally with a variant (``"en-us+f3"``, ``"en+m3"``, ``"en-us+klatt"``...). Unknown voices raise
InputError. libespeak-ng keeps state that no API resets (the pitch flutter's phase, a function-static
counter in its wave generator), which made a sentence's waveform depend on what the process had spoken
before: the same clip differed between a test run alone and one after other tests. Unloading the library
after every call would reset it, but unloading native code in a process full of it is fragile. So every
call speaks in a short-lived process of its own (:mod:`avatar_jax.audio.espeak_worker`,
~20 ms), and the same text, voice, rate and pitch give the same audio bit for bit, in any order and
process; this process never loads the library.

Licence note: libespeak-ng is GPL-3.0-or-later. It is loaded at run time from the separately
installed ``espeakng-loader`` wheel; none of its code or data is part of this repository.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np

from avatar_jax.audio.resample import resample
from avatar_jax.errors import InputError

SAMPLE_RATE = 16000
VOICES = ("en-us", "en", "en-us+f3", "en-us+m3", "en+f2", "en-gb-scotland")

_PAUSES = ("_", "_:", "_!", "_;")


_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "espeak_worker.py")


@dataclasses.dataclass(frozen=True)
class Speech:
    """``audio (S,)`` float32 at 16 kHz; timings in seconds, starts non-decreasing."""

    audio: np.ndarray
    phonemes: list[tuple[str, float, float]]
    words: list[tuple[str, float, float]]
    voice: str

    @property
    def duration_s(self) -> float:
        return self.audio.size / SAMPLE_RATE


def _speak(text: str, voice: str, rate_wpm: int, pitch: int) -> tuple[dict, np.ndarray]:
    """Run the worker once: its JSON head (native rate, error, phoneme and word events) and ``(S,)`` int16."""
    if importlib.util.find_spec("espeakng_loader") is None:
        raise InputError("text to speech needs the 'espeakng-loader' package: pip install espeakng-loader")
    request = json.dumps(dict(text=text, voice=voice, rate_wpm=int(rate_wpm), pitch=int(pitch))).encode()
    # -I: no user site or PYTHON* variables; the worker imports only ctypes and espeakng_loader
    res = subprocess.run([sys.executable, "-I", _WORKER], input=request, capture_output=True, timeout=120)
    head_line, _, raw = res.stdout.partition(b"\n")
    if res.returncode != 0 or not head_line:
        raise InputError(f"espeak worker failed (exit {res.returncode}): {res.stderr.decode(errors='replace')[-300:]}")
    head = json.loads(head_line)
    audio = np.frombuffer(raw, dtype=np.int16)
    if audio.size != head["samples"]:
        raise InputError(f"espeak worker returned {audio.size} samples, announced {head['samples']}")
    return head, audio


def _timings(starts: list[tuple[str, int]], total: int, rate: int) -> list[tuple[str, float, float]]:
    out = []
    for i, (name, start) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else total
        start, end = min(start, total), min(max(end, start), total)
        out.append((name, start / rate, end / rate))
    return out


def synthesize_detailed(text: str, voice: str = "en-us", rate_wpm: int = 175, pitch: int = 50) -> Speech:
    """Speak ``text`` with ``voice``; returns :class:`Speech` (16 kHz audio, phoneme and word timings).

    ``rate_wpm`` is espeak's speaking rate (80-450 words per minute), ``pitch`` its base pitch (0-100).
    Bit-repeatable: the same arguments give the same audio and timings in any call order (see the module doc).
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError("text to speak is empty")
    if not 80 <= rate_wpm <= 450 or not 0 <= pitch <= 100:
        raise InputError(f"rate_wpm must be in [80, 450] and pitch in [0, 100], got {rate_wpm}, {pitch}")
    head, raw = _speak(text, voice, rate_wpm, pitch)
    native = head["rate"]
    if native <= 0:
        raise InputError("libespeak-ng failed to initialise (its data is part of the espeakng-loader package)")
    if head["unknown_voice"]:
        raise InputError(f"unknown espeak voice {voice!r}; try one of {', '.join(VOICES)} "
                         "(language[+variant], e.g. 'en-us+f3')")
    if head["error"] != 0:
        raise InputError(f"espeak failed to synthesise the text (error {head['error']})")
    if raw.size == 0:
        raise InputError(f"espeak produced no audio for {text!r}")
    sink = {"phonemes": [tuple(p) for p in head["phonemes"]], "words": [tuple(w) for w in head["words"]]}
    audio = np.clip(resample(raw.astype(np.float64) / 32768.0, native, SAMPLE_RATE), -1.0, 1.0)
    phonemes = _timings(sink["phonemes"], raw.size, native)
    # a word spans its non-pause phonemes: those starting between its event and the next word's event
    words = []
    for i, (pos, length, event) in enumerate(sink["words"]):
        nxt = sink["words"][i + 1][2] if i + 1 < len(sink["words"]) else raw.size + 1
        spans = [(s, e) for (name, s, e) in phonemes if event / native <= s < nxt / native and name not in _PAUSES]
        start, end = (min(s for s, _ in spans), max(e for _, e in spans)) if spans else (event / native,) * 2
        words.append((text[pos - 1:pos - 1 + length], start, end))
    return Speech(audio=audio.astype(np.float32), phonemes=phonemes, words=words, voice=voice)


def synthesize(text: str, voice: str = "en-us", rate_wpm: int = 175,
               pitch: int = 50) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """``(audio (S,) float32 @ 16 kHz, [(phoneme, start_s, end_s), ...])`` for ``text``."""
    speech = synthesize_detailed(text, voice, rate_wpm, pitch)
    return speech.audio, speech.phonemes
