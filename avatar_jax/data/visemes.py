"""Phonemes (eSpeak mnemonics) -> mouth shape targets: jaw opening and lip rounding in [0, 1].

The mapping is coarse on purpose (it is a rig, not a phonetician): open vowels open the jaw widest,
close vowels less; bilabials (p, b, m) close the lips completely; labiodentals (f, v) nearly; other
consonants sit half-way; pauses close the mouth. Stress marks (``'`` primary, ``,`` secondary) are
stripped first; :func:`stress` reports them for prosody.
"""

from __future__ import annotations

# openness of vowels by their first letter (eSpeak English mnemonics: 0, a, A:, @, 3:, e, E, i:, I, O:, o, u:, U, V)
_VOWEL_OPEN = {"0": 0.85, "a": 1.0, "A": 1.0, "aI": 0.95, "aU": 0.95, "V": 0.8, "O": 0.75, "o": 0.7, "E": 0.7, "e": 0.6,
               "3": 0.55, "@": 0.45, "I": 0.35, "i": 0.3, "U": 0.35, "u": 0.3}
_ROUND = ("O", "o", "u", "U", "w", "aU", "oU", "OI")
_BILABIAL = ("p", "b", "m")
_LABIODENTAL = ("f", "v")
PAUSES = ("_", "_:", "_!", "_;", "")


def strip(phoneme: str) -> str:
    return phoneme.lstrip("',").strip()


def stress(phoneme: str) -> int:
    """2 for primary stress, 1 for secondary, 0 otherwise."""
    return 2 if phoneme.startswith("'") else 1 if phoneme.startswith(",") else 0


def is_vowel(phoneme: str) -> bool:
    p = strip(phoneme)
    return bool(p) and (p[:2] in _VOWEL_OPEN or p[:1] in _VOWEL_OPEN)


def is_pause(phoneme: str) -> bool:
    p = strip(phoneme)
    return p in PAUSES or p.startswith("_")


def speech_spans(phonemes: list[tuple[str, float, float]]) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of the spoken (non-pause, non-empty) phonemes."""
    return [(float(s), float(e)) for name, s, e in phonemes if not is_pause(name) and e > s]


def jaw_open(phoneme: str) -> float:
    """Jaw opening target in [0, 1] for one phoneme."""
    p = strip(phoneme)
    if is_pause(p):
        return 0.0
    if p[:1] in _BILABIAL:
        return 0.0
    if p[:1] in _LABIODENTAL:
        return 0.1
    if p[:2] in _VOWEL_OPEN:
        return _VOWEL_OPEN[p[:2]]
    if p[:1] in _VOWEL_OPEN:
        return _VOWEL_OPEN[p[:1]]
    return 0.25


def lip_round(phoneme: str) -> float:
    p = strip(phoneme)
    return 1.0 if p[:2] in _ROUND or p[:1] in _ROUND else 0.0
