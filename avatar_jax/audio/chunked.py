"""Encode long audio in fixed-length overlapping chunks with bounded memory, stitched at the frame level.

    audio (B, N) ─► windows of ``chunk`` samples every ``chunk - overlap`` samples; the last window is
                    moved left to end at the audio's end (so it is not mostly zero padding)
                 ─► encoder on one window at a time (``lax.map``: one compile, one window's activations live)
                 ─► each frame is taken from the window whose overlap middles enclose it ─► (B, T(N), D)

Window starts are multiples of the encoder's hop, so window frames fall on the single-pass frame
grid. A kept frame has about ``overlap / 2`` of context on both sides (except at the ends of the
audio): frames of local encoders (the LayerNorm conv stack, the positional conv) then equal the single
pass exactly; frames after global attention (or the per-window GroupNorm of wav2vec2-base's first
conv) differ, since each window only sees itself. Padded samples (audio shorter than one window, or
the < hop samples that align the last window) are masked out of attention.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avatar_jax.audio.wav2vec2 import Wav2Vec2Model, frame_mask_from_lengths
from avatar_jax.errors import ConfigError


def chunk_layout(num_samples: int, chunk: int, overlap: int, hop: int, frames_per_chunk: int,
                 total_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window starts ``(C,)`` in samples, and per output frame ``(T,)`` its window and local index."""
    if chunk % hop or overlap % hop:
        raise ConfigError(f"chunk ({chunk}) and overlap ({overlap}) must be multiples of the hop ({hop} samples)")
    if not 0 < overlap < chunk:
        raise ConfigError(f"overlap ({overlap}) must be in (0, chunk={chunk})")
    step = chunk - overlap
    if step // hop >= frames_per_chunk:
        raise ConfigError(
            f"windows of {chunk} samples ({frames_per_chunk} frames) every {step} samples leave gaps; "
            f"increase the overlap beyond the encoder's receptive field"
        )
    starts = [0]
    while starts[-1] + chunk < num_samples:
        nxt = starts[-1] + step
        if nxt + chunk >= num_samples:  # last window: end at the audio's end (start rounded up to the hop)
            nxt = max(starts[-1] + hop, -(-(num_samples - chunk) // hop) * hop)
        starts.append(nxt)
    first = np.asarray(starts) // hop  # first global frame of each window
    # boundary between windows c and c+1: the middle of their common frames
    bounds = [(first[c + 1] + first[c] + frames_per_chunk) // 2 for c in range(len(starts) - 1)]
    edges = np.asarray([0, *bounds, total_frames])
    frame = np.arange(total_frames)
    window = np.searchsorted(edges, frame, side="right") - 1
    return np.asarray(starts), window, frame - first[window]


def encode_long(model: Wav2Vec2Model, audio: jax.Array, *, chunk: int = 16000 * 10, overlap: int = 16000,
                layer: int | None = None) -> jax.Array:
    """``audio (B, N)`` -> ``(B, T(N), D)`` hidden states of ``layer`` (None: ``last_hidden_state``).

    ``chunk`` / ``overlap`` in samples (defaults: 10 s windows, 1 s overlap at 16 kHz). Peak activation
    memory is that of one ``(B, chunk)`` forward pass whatever ``N``.
    """
    chex.assert_rank(audio, 2)
    spec = model.spec
    num_samples = audio.shape[1]
    total = spec.num_frames(num_samples)
    starts, window, local = chunk_layout(num_samples, chunk, overlap, spec.samples_per_frame,
                                         spec.num_frames(chunk), total)
    audio = jnp.pad(audio, ((0, 0), (0, max(0, int(starts[-1]) + chunk - num_samples))))
    graphdef, state = nnx.split(model)
    return _encode_long(graphdef, state, audio, jnp.asarray(starts), jnp.asarray(window), jnp.asarray(local),
                        num_samples, chunk=chunk, layer=layer)


@jax.jit(static_argnames=("graphdef", "chunk", "layer"))
def _encode_long(graphdef, state, audio, starts, window, local, num_samples, *, chunk, layer):
    model = nnx.merge(graphdef, state)
    batch = audio.shape[0]
    per_chunk = model.spec.num_frames(chunk)

    def one(start):
        piece = jax.lax.dynamic_slice_in_dim(audio, start, chunk, axis=1)
        valid = jnp.clip(num_samples - start, 0, chunk)
        mask = frame_mask_from_lengths(model.spec, jnp.full((batch,), valid), per_chunk)
        out = model(piece, mask)
        return out.last_hidden_state if layer is None else out.hidden_states[layer]

    frames = jax.lax.map(one, starts)  # (C, B, F, D), computed one window at a time
    return frames[window, :, local].transpose(1, 0, 2)  # (T, B, D) -> (B, T, D)
