"""The fusion's frame position encoding generalises to any stream length (issue 12, Time)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.config import load_config
from avatar_jax.model.driving import DrivingEncoder
from avatar_jax.model.fusion import sinusoidal_encoding


def test_default_position_encoding_cycles_within_a_training_window():
    """Every PE component runs through (nearly) its whole range inside one 1 s training window, so frame
    1500 of a stream shows the fusion nothing a window at offsets 0..24 did not; the paper-style
    max_period 10000 leaves its slow components near their start value there (what made the motion drift)."""
    c = load_config("tiny")
    fusion = DrivingEncoder(c.audio, 16, nnx.Rngs(0)).fusion
    assert fusion.pe_dim == c.audio.pe_dim and fusion.max_period == c.audio.pe_max_period
    window = int(c.audio.fps)  # motion-study trains on 1 s windows
    pe = np.asarray(sinusoidal_encoding(np.arange(window), fusion.pe_dim, fusion.max_period))
    assert pe.min(0).max() < -0.8 and pe.max(0).min() > 0.8
    late = np.asarray(sinusoidal_encoding(np.arange(1500, 1500 + window), fusion.pe_dim, fusion.max_period))
    assert np.abs(late.min(0) - pe.min(0)).max() < 0.3 and np.abs(late.max(0) - pe.max(0)).max() < 0.3
    slow = np.asarray(sinusoidal_encoding(np.arange(window), fusion.pe_dim, 10000.0))
    assert slow.max(0).min() < 0.2  # a sine component that never leaves 0 in the window


def test_a_window_encoded_with_its_clip_context_gets_the_clips_tokens():
    """motion-study trains on 1 s windows of longer clips and encodes the whole clip at inference; with
    ``context_frames`` a window's tokens are those of the clip (same audio around it, same frame index), while
    the window encoded alone gets different ones (the encoder's log-mel floor and attention see only 1 s)."""
    c = load_config("tiny")
    with c.unlocked():
        c.audio.embedded_dim, c.audio.embedded_width, c.audio.embedded_depth = 32, 32, 1
    enc = DrivingEncoder(c.audio, 16, nnx.Rngs(0))
    rng = np.random.default_rng(0)
    frames, spf = 100, 640  # 4 s at 25 fps
    t = np.arange(frames * spf) / 16000
    loud = (np.sin(2 * np.pi * 0.7 * t) > 0).astype(np.float32)  # speech-like on/off bursts
    audio = (loud * (0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(t.size))).astype(np.float32)
    whole = np.asarray(enc(jnp.asarray(audio), frames))
    s0, n, ctx = 40, 25, 40
    windowed = np.asarray(enc(jnp.asarray(audio[(s0 - ctx) * spf:(s0 + n + ctx) * spf]), n, frame_offset=s0,
                              context_frames=ctx))
    assert windowed.shape == (n, 16)
    np.testing.assert_allclose(windowed, whole[s0:s0 + n], atol=1e-5)
    alone = np.asarray(enc(jnp.asarray(audio[s0 * spf:(s0 + n) * spf]), n, frame_offset=s0))
    assert np.abs(alone - whole[s0:s0 + n]).max() > 1e-2
    with pytest.raises(ValueError, match="context_frames"):
        enc(jnp.asarray(audio), 10, context_frames=-1)
