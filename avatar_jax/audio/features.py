"""Whisper log-mel spectrogram (in JAX, jittable) and resampling of feature sequences to the video frame rate.

Log-mel, with the conventions of ``transformers.WhisperFeatureExtractor`` (and OpenAI Whisper):
16 kHz audio, 400-sample periodic Hann window, hop 160 (100 frames/s), frames centred on
``i·160`` with reflect padding, power spectrum, Slaney-scale mel filters with Slaney area
normalisation over 0-8 kHz, ``log10`` with floor ``1e-10``, the last STFT frame dropped, values
below ``max - 8`` raised to ``max - 8`` (per utterance) and finally ``(x + 4) / 4``.
Output is time-major ``(S // 160, n_mels)`` (upstream returns ``(n_mels, frames)``).

Frame-rate conversion (:func:`to_frame_rate`): feature ``i`` of a sequence at ``feature_rate`` Hz is
treated as a box over ``[i/rate + offset, (i+1)/rate + offset)``; video frame ``t`` covers
``[t/fps, (t+1)/fps)``. Output ``t`` is the **exact time-weighted average** of the feature boxes
overlapping frame ``t``'s window (not point interpolation): downsampling integrates everything that
happened during the frame, upsampling (rate < fps) holds the covering feature. Frames past the end
of the features hold the last feature. ``offset`` is where a feature's window sits relative to
``i/rate``: ``-0.5/rate`` for centred frames (log-mel: -5 ms).
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.errors import InputError

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
MEL_RATE = SAMPLE_RATE / HOP  # 100 frames per second
MEL_OFFSET_S = -0.5 / MEL_RATE  # frame i is centred on i/100 s


# ---------------------------------------------------------------------------------------------- mel filters

def hz_to_mel_slaney(f):
    """Slaney mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def mel_to_hz_slaney(m):
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


@functools.lru_cache(maxsize=8)
def mel_filters(n_mels: int = 80, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                f_min: float = 0.0, f_max: float = 8000.0) -> np.ndarray:
    """Triangular Slaney mel filters with area normalisation, ``(n_fft//2 + 1, n_mels)`` float64."""
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges_hz = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(f_min), hz_to_mel_slaney(f_max), n_mels + 2))
    lower, centre, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    rising = (fft_hz[:, None] - lower) / (centre - lower)
    falling = (upper - fft_hz[:, None]) / (upper - centre)
    tri = np.maximum(0.0, np.minimum(rising, falling))
    out = tri * (2.0 / (upper - lower))  # equal area per filter
    out.setflags(write=False)
    return out


# ---------------------------------------------------------------------------------------------- log-mel

def _periodic_hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def num_mel_frames(num_samples: int) -> int:
    """Frames :func:`log_mel_spectrogram` returns for ``num_samples`` samples (= ``num_samples // 160``)."""
    return num_samples // HOP


@functools.partial(jax.jit, static_argnames=("n_mels",))
def _log_mel(audio: jax.Array, n_mels: int) -> jax.Array:
    pad = N_FFT // 2
    x = jnp.pad(audio, (pad, pad), mode="reflect")
    n_frames = 1 + audio.shape[0] // HOP
    # jnp (not np) indices: the length may be symbolic when the encoder is exported (jax.export)
    idx = jnp.arange(n_frames)[:, None] * HOP + jnp.arange(N_FFT)[None, :]
    frames = x[idx] * jnp.asarray(_periodic_hann(N_FFT), jnp.float32)
    spec = jnp.fft.rfft(frames, axis=-1)
    power = jnp.square(spec.real) + jnp.square(spec.imag)  # (frames, 201)
    mel = power @ jnp.asarray(mel_filters(n_mels), jnp.float32)
    log = jnp.log10(jnp.maximum(mel, 1e-10))[:-1]
    log = jnp.maximum(log, log.max() - 8.0)
    return (log + 4.0) / 4.0


def log_mel_spectrogram(audio, n_mels: int = 80, pad_to_samples: int | None = None) -> jax.Array:
    """Whisper log-mel of ``audio (S,)`` float32 at 16 kHz -> ``(S' // 160, n_mels)`` float32.

    ``pad_to_samples`` zero-pads (or truncates) first, as Whisper's model input does with 480000
    (30 s -> 3000 frames); ``None`` uses the audio as is (``S' = S``). Silent audio is allowed (a
    constant -1.5 after the floor and scaling). Jittable per input length.
    """
    audio = jnp.asarray(audio, jnp.float32)
    chex.assert_rank(audio, 1)
    if pad_to_samples is not None:
        audio = jnp.pad(audio[:pad_to_samples], (0, max(0, pad_to_samples - audio.shape[0])))
    if audio.shape[0] < N_FFT // 2 + 1:
        raise InputError(f"log-mel needs at least {N_FFT // 2 + 1} samples (reflect padding), got {audio.shape[0]}")
    return _log_mel(audio, n_mels)


# ---------------------------------------------------------------------------------------------- frame rate

def num_video_frames(num_samples: int, fps: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Video frames for ``num_samples`` of audio: ``ceil(duration·fps)`` so every sample is shown.

    The last frame may be partly covered; :func:`to_frame_rate` averages over its covered part.
    """
    return max(1, math.ceil(num_samples * fps / sample_rate - 1e-9))


@functools.lru_cache(maxsize=64)
def frame_rate_weights(num_features: int, feature_rate: float, fps: float, num_frames: int,
                       offset_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Gather indices and weights ``(num_frames, K)`` so ``out[t] = Σ_k w[t,k] · f[idx[t,k]]``.

    ``w[t, k]`` is the fraction of frame ``t``'s window (clipped to the span the features cover)
    that feature ``idx[t, k]`` occupies; each row sums to 1.
    """
    if num_features <= 0 or num_frames <= 0 or feature_rate <= 0 or fps <= 0:
        raise InputError(f"to_frame_rate needs positive sizes and rates, got F={num_features}, "
                         f"rate={feature_rate}, fps={fps}, T={num_frames}")
    t = np.arange(num_frames, dtype=np.float64)
    # frame window in feature-index units, clipped to the covered span [0, F]
    a = np.clip((t / fps - offset_s) * feature_rate, 0.0, num_features)
    b = np.clip(((t + 1) / fps - offset_s) * feature_rate, 0.0, num_features)
    k_max = int(math.ceil(feature_rate / fps)) + 2
    first = np.floor(a).astype(np.int64)
    idx = first[:, None] + np.arange(k_max)[None, :]
    lo = np.maximum(a[:, None], idx)
    hi = np.minimum(b[:, None], idx + 1)
    overlap = np.maximum(0.0, hi - lo)
    total = overlap.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 1e-9
    w = np.where(empty[:, None], 0.0, overlap / np.where(total > 0, total, 1.0))
    # windows entirely outside the features: hold the nearest edge feature
    edge = np.where(a[empty] <= 0.0, 0, num_features - 1)
    idx[empty, 0] = edge
    w[empty, 0] = 1.0
    idx = np.clip(idx, 0, num_features - 1)
    return idx.astype(np.int32), w.astype(np.float32)


def to_frame_rate(features, feature_rate: float, fps: float, num_frames: int,
                  offset_s: float = 0.0) -> jax.Array:
    """Resample ``features (..., F, D)`` at ``feature_rate`` Hz to ``(..., num_frames, D)`` at ``fps``.

    Output ``t`` covers ``[t/fps, (t+1)/fps)``: the time-weighted average of the features over that
    window (see the module docstring). Differentiable in ``features``; jittable (the weights are
    static numpy). wav2vec2 / Whisper encoders run at 50 Hz, log-mel at 100 Hz.
    """
    features = jnp.asarray(features)
    if features.ndim < 2:
        raise InputError(f"features must be (..., F, D), got shape {features.shape}")
    idx, w = frame_rate_weights(int(features.shape[-2]), float(feature_rate), float(fps), int(num_frames),
                                float(offset_s))
    gathered = jnp.take(features, jnp.asarray(idx), axis=-2)  # (..., T, K, D)
    return jnp.einsum("...tkd,tk->...td", gathered, jnp.asarray(w, features.dtype))
