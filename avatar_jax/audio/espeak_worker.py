"""One eSpeak NG synthesis in a process of its own (run as a script by :mod:`avatar_jax.audio.tts`).

libespeak-ng keeps state that no API resets (the pitch flutter's phase), so a sentence spoken in a
long-lived process depends on what that process spoke before. Unloading the library (dlclose) in the
caller's process after every call would reset it, but unloading a C++ library from a process full of
native code is fragile, so each call speaks in a short-lived process that imports only ctypes and the library.

stdin: one JSON request ``{"text", "voice", "rate_wpm", "pitch"}``. stdout: one JSON line
``{"rate", "error", "unknown_voice", "phonemes": [[name, sample]], "words": [[pos, len, sample]],
"samples"}`` followed by ``samples`` int16 samples (native byte order) at ``rate`` Hz.
"""

import ctypes
import json
import sys

# espeak_EVENT_TYPE / espeak_AUDIO_OUTPUT / flags / parameters (speak_lib.h)
_EV_END_OF_LIST, _EV_WORD, _EV_PHONEME = 0, 1, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS, _INIT_DONT_EXIT = 0x0001, 0x8000
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_PARAM_RATE, _PARAM_PITCH = 1, 3


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def speak(request: dict) -> tuple[dict, bytes]:
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    head = {"rate": 0, "error": 0, "unknown_voice": False, "phonemes": [], "words": [], "samples": 0}
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
                                 _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
    head["rate"] = rate
    if rate <= 0:
        return head, b""
    chunks = []

    def on_audio(wav, num_samples, events):
        if num_samples > 0:
            chunks.append(ctypes.string_at(wav, num_samples * 2))
        i = 0
        while events[i].type != _EV_END_OF_LIST:
            ev = events[i]
            if ev.type == _EV_PHONEME:
                name = bytes(ev.id.string).split(b"\0")[0].decode("utf-8", "replace")
                head["phonemes"].append((name, int(ev.sample)))
            elif ev.type == _EV_WORD:
                head["words"].append((int(ev.text_position), int(ev.length), int(ev.sample)))
            i += 1
        return 0  # continue synthesis

    callback = _CALLBACK(on_audio)
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(request["voice"].encode()) != 0:
        head["unknown_voice"] = True
        return head, b""
    lib.espeak_SetParameter(_PARAM_RATE, int(request["rate_wpm"]), 0)
    lib.espeak_SetParameter(_PARAM_PITCH, int(request["pitch"]), 0)
    lib.espeak_ng_SetRandSeed(0)  # espeak's random jitter, the same every call
    data = request["text"].encode("utf-8")
    err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    head["error"] = err or lib.espeak_Synchronize()
    lib.espeak_Terminate()
    raw = b"".join(chunks)
    head["samples"] = len(raw) // 2
    return head, raw


if __name__ == "__main__":
    head, raw = speak(json.loads(sys.stdin.read()))
    sys.stdout.buffer.write(json.dumps(head).encode() + b"\n" + raw)
    sys.stdout.buffer.flush()
