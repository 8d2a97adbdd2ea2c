"""The fusion's frame position encoding generalises to any stream length (issue 12, Time)."""

import numpy as np
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
