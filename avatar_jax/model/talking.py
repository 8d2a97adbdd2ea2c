"""The whole audio -> Gaussians path as one module: driving encoder + audio-driven avatar.

``TalkingAvatar(avatar, audio) -> FrameGaussians (T, N, ...)``; render each frame with
``avatar_jax.render.render(**out.frame(t), camera=...)``.
"""

from __future__ import annotations

import jax
from flax import nnx

from avatar_jax.model.avatar import AudioDrivenAvatar, Carry, FrameGaussians
from avatar_jax.model.canonical import CanonicalAvatar
from avatar_jax.model.driving import DrivingEncoder


class TalkingAvatar(nnx.Module):
    def __init__(self, config, rngs: nnx.Rngs, *, encoder=None):
        """``config`` is the full config (uses ``config.audio`` and ``config.model``)."""
        self.driving = DrivingEncoder(config.audio, config.model.d_model, rngs, encoder=encoder)
        self.motion = AudioDrivenAvatar(config.model, rngs)

    def __call__(self, avatar: CanonicalAvatar, audio: jax.Array, num_frames: int | None = None,
                 carry: Carry | None = None) -> tuple[FrameGaussians, Carry]:
        """``audio (S,)`` at 16 kHz -> per-frame Gaussians ``(T, N, ...)`` and the carry after the last frame.

        The fusion's position encoding starts at ``carry.frame`` (the absolute index of the first frame)."""
        offset = 0 if carry is None else carry.frame
        driving = self.driving(audio, num_frames, frame_offset=offset)
        return self.motion(avatar, driving, carry)
