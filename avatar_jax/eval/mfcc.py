"""MFCCs as SyncNet's evaluation computes them (``python_speech_features.mfcc`` with its defaults).

    signal (S,) at 16 kHz, int16 scale ──► pre-emphasis 0.97 ──► 25 ms frames every 10 ms (rectangular,
    zero-padded tail) ──► |rfft 512|² / 512 ──► 26 triangular mel filters ──► log ──► DCT-II (ortho), 13
    ──► lifter 22 ──► coefficient 0 replaced by the log frame energy                  ──► (F, 13)

SyncNet was trained on these features of int16 audio read with ``scipy.io.wavfile``, so the scale of
the signal matters (the log energies shift with it): :func:`int16_scale` turns float audio in [-1, 1]
into the values that writing and re-reading a 16-bit wav gives. Computed in float64 numpy, as upstream.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

SAMPLE_RATE = 16000
WIN_LEN, WIN_STEP = 0.025, 0.01
NUM_CEP, NUM_FILT, NFFT = 13, 26, 512
PREEMPH, CEP_LIFTER = 0.97, 22


def int16_scale(audio: np.ndarray) -> np.ndarray:
    """(S,) float in [-1, 1] -> (S,) float64 holding the int16 samples of a 16-bit wav of that audio."""
    return np.round(np.clip(np.asarray(audio, np.float64), -1.0, 1.0) * 32767.0)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def mel_filterbank(nfilt: int = NUM_FILT, nfft: int = NFFT, samplerate: int = SAMPLE_RATE) -> np.ndarray:
    """(nfilt, nfft // 2 + 1) triangular filters on mel-spaced, floor-rounded FFT bins (0 Hz to Nyquist)."""
    high_mel = 2595.0 * np.log10(1.0 + (samplerate / 2) / 700.0)
    mel = np.linspace(0.0, high_mel, nfilt + 2)
    bins = np.floor((nfft + 1) * (700.0 * (10.0 ** (mel / 2595.0) - 1.0)) / samplerate)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        rise = np.arange(int(lo), int(mid))
        fb[j, rise] = (rise - lo) / (mid - lo)
        fall = np.arange(int(mid), int(hi))
        fb[j, fall] = (hi - fall) / (hi - mid)
    return fb


def mfcc(signal: np.ndarray, samplerate: int = SAMPLE_RATE) -> np.ndarray:
    """(S,) samples -> (F, 13) MFCCs, F = 1 + ceil((S - 400) / 160) at 16 kHz (100 frames a second)."""
    sig = np.asarray(signal, np.float64).reshape(-1)
    sig = np.append(sig[0], sig[1:] - PREEMPH * sig[:-1])
    frame_len, frame_step = _round_half_up(WIN_LEN * samplerate), _round_half_up(WIN_STEP * samplerate)
    n = 1 if len(sig) <= frame_len else 1 + math.ceil((len(sig) - frame_len) / frame_step)
    padded = np.concatenate([sig, np.zeros((n - 1) * frame_step + frame_len - len(sig))])
    frames = padded[np.arange(frame_len)[None, :] + frame_step * np.arange(n)[:, None]]
    pspec = np.abs(np.fft.rfft(frames, NFFT)) ** 2 / NFFT
    eps = np.finfo(float).eps
    energy = pspec.sum(1)
    energy = np.where(energy == 0, eps, energy)
    feat = pspec @ mel_filterbank(NUM_FILT, NFFT, samplerate).T
    feat = np.where(feat == 0, eps, feat)
    cep = scipy.fft.dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :NUM_CEP]
    cep = cep * (1 + (CEP_LIFTER / 2.0) * np.sin(np.pi * np.arange(NUM_CEP) / CEP_LIFTER))
    cep[:, 0] = np.log(energy)
    return cep
