"""Driving tokens from audio: an audio encoder (embedded by default) followed by the gated fusion.

``DrivingEncoder(audio (S,) @ 16 kHz) -> D (T, d_model)`` at the video frame rate: features are
resampled so that token ``t`` covers frame ``t``'s window ``[t/fps, (t+1)/fps)`` (DESIGN.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.audio.embedded import EmbeddedAudioEncoder
from avatar_jax.audio.encoder import encode_to_frames
from avatar_jax.audio.features import num_video_frames
from avatar_jax.errors import ConfigError
from avatar_jax.model.fusion import GatedFusion


class DrivingEncoder(nnx.Module):
    """Audio encoder + :class:`GatedFusion`; text (when given) enters through the fusion's text branch."""

    def __init__(self, audio_config, d_model: int, rngs: nnx.Rngs, *, encoder=None, d_text: int | None = None):
        self.fps = float(audio_config.fps)
        # The embedded encoder trains with the avatar; a pretrained one (wav2vec2/HuBERT) is passed in
        # (train/state.py builds it from config.audio and loads its weights).
        kind = str(audio_config.get("encoder", "embedded"))
        if encoder is None and kind != "embedded":
            raise ConfigError(f"audio.encoder={kind!r}: build the model with train.state.initial_model (it loads the "
                              "pretrained encoder); this path only builds the embedded encoder")
        self.encoder = encoder if encoder is not None else EmbeddedAudioEncoder(
            dim=audio_config.get("embedded_dim", 128), width=audio_config.get("embedded_width", 96),
            depth=audio_config.get("embedded_depth", 2), rngs=rngs)
        # PE(t) of the absolute frame: with the paper-style max_period 10000 frames 1500 onwards of a
        # stream look like nothing training windows (offsets within a few-second clip) showed, and the
        # motion drifts with t; at pe_max_period 4 every component cycles within 1 s (the longest period is
        # 2 pi 4^(31/32) ~ 24 frames), so any frame index is in the range training covers.
        self.fusion = GatedFusion(self.encoder.dim, d_model, d_z=d_text, pe_dim=audio_config.get("pe_dim", 64),
                                  max_period=float(audio_config.get("pe_max_period", 10000.0)), rngs=rngs)

    def num_frames(self, num_samples: int) -> int:
        return num_video_frames(num_samples, self.fps, self.encoder.sample_rate)

    def __call__(self, audio: jax.Array, num_frames: int | None = None, text: jax.Array | None = None,
                 text_mask: jax.Array | None = None, frame_offset: int = 0, context_frames: int = 0) -> jax.Array:
        """``audio (S,)`` float32 at 16 kHz -> ``D (T, d_model)``, ``T = num_frames`` (default: cover all audio).

        ``context_frames``: the audio starts that many frames before the first token returned (and may run on
        after the last): a window of a longer clip is encoded with the clip's audio around it, as the whole
        clip is at inference (the encoder's attention sees ~1.3-2.6 s either side)."""
        if context_frames < 0:
            raise ValueError(f"context_frames must be >= 0, got {context_frames}")
        total = None if num_frames is None else context_frames + num_frames
        feats = encode_to_frames(self.encoder, jnp.asarray(audio, jnp.float32), self.fps, total)[context_frames:]
        return self.fusion(feats, text, text_mask, frame_offset=frame_offset)
