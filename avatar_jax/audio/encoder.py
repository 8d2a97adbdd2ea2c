"""The interface every audio encoder follows (embedded, wav2vec2, Whisper), and the frame-rate helper.

An encoder maps 16 kHz mono float32 audio ``(S,)`` to features ``(F, dim)`` at ``feature_rate`` Hz.
:func:`encode_to_frames` resamples them to the video frame rate so that feature ``t`` covers frame
``t``'s window ``[t/fps, (t+1)/fps)`` (time-weighted average, see :mod:`avatar_jax.audio.features`).

An encoder may also define ``feature_offset_s``: where feature ``i``'s window starts relative to
``i/feature_rate`` (e.g. ``-0.5/feature_rate`` when features are centred on ``i/feature_rate``);
0 if absent.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import chex
import jax
import jax.numpy as jnp

from avatar_jax.audio.features import num_video_frames, to_frame_rate
from avatar_jax.errors import InputError


@runtime_checkable
class AudioEncoder(Protocol):
    """``audio (S,) float32 @ sample_rate -> features (F, dim) @ feature_rate``."""

    sample_rate: int
    feature_rate: float
    dim: int

    def __call__(self, audio: jax.Array) -> jax.Array: ...


def encode_to_frames(encoder: AudioEncoder, audio, fps: float, num_frames: int | None = None) -> jax.Array:
    """Encode ``audio (S,)`` and return ``(num_frames, encoder.dim)`` features at ``fps``.

    ``num_frames`` defaults to ``ceil(S / sample_rate · fps)`` (every sample lands in a frame).
    """
    audio = jnp.asarray(audio, jnp.float32)
    if audio.ndim != 1 or audio.shape[0] == 0:
        raise InputError(f"encode_to_frames expects mono audio (S,) with S > 0, got shape {audio.shape}")
    if num_frames is None:
        num_frames = num_video_frames(audio.shape[0], fps, encoder.sample_rate)
    feats = encoder(audio)
    chex.assert_rank(feats, 2)
    chex.assert_axis_dimension(feats, 1, encoder.dim)
    offset = float(getattr(encoder, "feature_offset_s", 0.0))
    return to_frame_rate(feats, encoder.feature_rate, fps, num_frames, offset_s=offset)
