"""Transcript embeddings ``Z (L, d_z)`` from Whisper (paper: E_text of a speech-to-text model).

Given audio, Whisper's decoder reads the transcript tokens (produced by greedy decoding when no
transcript is given, or the user's own tokens) with cross-attention to the audio, and its final
hidden states are the token embeddings the gated fusion pools. Long audio is cut into Whisper's
windows (at most ``2 * max_source_positions`` mel frames each) and the windows' tokens concatenated.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np

from avatar_jax.audio import whisper
from avatar_jax.errors import InputError


def transcript_embedding(model: whisper.WhisperModel, mel, tokens=None, *, prompt=None,
                         max_new_tokens: int = 96) -> tuple[jnp.ndarray, list[int]]:
    """``mel (T, n_mels)`` of one utterance -> ``(Z (L, d_z), tokens)``.

    ``tokens``: the transcript as Whisper token ids (prompt included) for a window-sized input; when
    None they are decoded greedily per window with ``prompt`` (default: the checkpoint's own).
    """
    mel = jnp.asarray(mel, jnp.float32)
    chex.assert_rank(mel, 2)
    if mel.shape[0] == 0:
        raise InputError("cannot embed the transcript of empty audio (0 mel frames)")
    window = model.spec.max_mel_frames
    settings = model.generation
    prompt = list(prompt) if prompt is not None else whisper.default_prompt(settings, None)
    if tokens is not None and mel.shape[0] > window:
        raise InputError(f"given tokens cover one window of {window} mel frames, the audio has {mel.shape[0]}")
    embeddings, all_tokens = [], []
    for start in range(0, mel.shape[0], window):
        chunk = mel[start:start + window][None]
        enc = model.encoder(chunk).last_hidden_state
        if tokens is None:
            generated = whisper.greedy_decode(model, chunk, prompt, max_new_tokens, settings)
            row = prompt + whisper.strip_generated(generated, len(prompt), settings)[0]
        else:
            row = [int(t) for t in np.asarray(tokens).reshape(-1)]
        dec = model.decoder(jnp.asarray([row], jnp.int32), enc)
        embeddings.append(dec.last_hidden_state[0])
        all_tokens.extend(row)
    return jnp.concatenate(embeddings, axis=0), all_tokens
