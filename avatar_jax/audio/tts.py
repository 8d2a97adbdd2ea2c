"""Text to speech with eSpeak NG (``espeakng-loader`` wheel: bundled libespeak-ng and its data), via ctypes.

:func:`synthesize` returns 16 kHz mono float32 audio (espeak's 22050 Hz resampled by our polyphase
filter) and phoneme timings ``[(phoneme, start_s, end_s)]``; :func:`synthesize_detailed` adds word
timings. Phonemes are espeak's ASCII mnemonics (``'oU``, ``3:``...; a leading ``'``/``,`` marks
stress); pauses are the phonemes ``_`` and ``_:``. A phoneme starts at the audio sample espeak reports
for its event and ends where the next one starts (the last one at the end of the audio).

Voices: an espeak language (``"en-us"``, ``"en"`` = British, ``"en-gb-scotland"``, ``"de"``, ...),
optionally with a variant (``"en-us+f3"``, ``"en+m3"``, ``"en-us+klatt"``...). Unknown voices raise
InputError. libespeak-ng keeps global state (one voice, one callback), so every call holds a
module lock. It also keeps state no API resets (the pitch flutter's phase, a function-static counter in
its wave generator), which made a sentence's waveform depend on what the process had spoken before: the
same clip differed between a test run alone and one after other tests. So every call loads a fresh
instance of the library (dlopen, initialise in synchronous mode, speak, terminate, dlclose: ~10 ms),
and the same text, voice, rate and pitch give the same audio bit for bit, in any order and process.

Licence note: libespeak-ng is GPL-3.0-or-later. It is loaded at run time from the separately
installed ``espeakng-loader`` wheel; none of its code or data is part of this repository.
"""

from __future__ import annotations

import _ctypes
import ctypes
import dataclasses
import threading

import numpy as np

from avatar_jax.audio.resample import resample
from avatar_jax.errors import InputError

SAMPLE_RATE = 16000
VOICES = ("en-us", "en", "en-us+f3", "en-us+m3", "en+f2", "en-gb-scotland")

# espeak_EVENT_TYPE / espeak_AUDIO_OUTPUT / flags / parameters (speak_lib.h)
_EV_END_OF_LIST, _EV_WORD, _EV_PHONEME = 0, 1, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS, _INIT_DONT_EXIT = 0x0001, 0x8000
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_PARAM_RATE, _PARAM_PITCH = 1, 3
_PAUSES = ("_", "_:", "_!", "_;")


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

_lock = threading.Lock()
_state: dict = {}  # the running call's sink (the callback writes into it)


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


def _on_audio(wav, num_samples, events):
    sink = _state["sink"]
    if num_samples > 0:
        sink["chunks"].append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
    i = 0
    while events[i].type != _EV_END_OF_LIST:
        ev = events[i]
        if ev.type == _EV_PHONEME:
            name = bytes(ev.id.string).split(b"\0")[0].decode("utf-8", "replace")
            sink["phonemes"].append((name, int(ev.sample)))
        elif ev.type == _EV_WORD:
            sink["words"].append((int(ev.text_position), int(ev.length), int(ev.sample)))
        i += 1
    return 0  # continue synthesis


def _open_library():
    """A freshly loaded, initialised libespeak-ng ``(lib, native rate, callback)`` (caller holds the lock).

    The previous call's instance was unloaded (:func:`_close_library`), so its static state starts anew."""
    try:
        import espeakng_loader
    except ImportError as e:
        raise InputError("text to speech needs the 'espeakng-loader' package: pip install espeakng-loader") from e
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
                                 _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
    if rate <= 0:
        _ctypes.dlclose(lib._handle)
        raise InputError(f"libespeak-ng failed to initialise (data at {espeakng_loader.get_data_path()})")
    callback = _CALLBACK(_on_audio)
    lib.espeak_SetSynthCallback(callback)
    return lib, rate, callback


def _close_library(lib) -> None:
    """Free espeak's buffers and unload the instance (the next dlopen starts from the file's initial state)."""
    lib.espeak_Terminate()
    _ctypes.dlclose(lib._handle)


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
    data = text.encode("utf-8")
    with _lock:
        lib, native, _callback = _open_library()  # the callback object must live until the library is closed
        try:
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise InputError(f"unknown espeak voice {voice!r}; try one of {', '.join(VOICES)} "
                                 "(language[+variant], e.g. 'en-us+f3')")
            lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
            lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            lib.espeak_ng_SetRandSeed(0)  # espeak's random jitter, the same every call
            _state["sink"] = sink = {"chunks": [], "phonemes": [], "words": []}
            err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            err = err or lib.espeak_Synchronize()
        finally:
            _state["sink"] = None
            _close_library(lib)
    if err != 0:
        raise InputError(f"espeak failed to synthesise the text (error {err})")
    if not sink["chunks"]:
        raise InputError(f"espeak produced no audio for {text!r}")
    raw = np.concatenate(sink["chunks"])
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
