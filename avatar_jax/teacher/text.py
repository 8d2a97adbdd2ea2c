"""Text conditioning of the teacher: Wan's padding rule and precomputed text embeddings on disk.

The Wan pipeline encodes a prompt with umT5 (at most 512 tokens), zeroes the states of padded tokens and
pads the sequence to 512 with zeros; the DiT always sees ``(B, 512, 4096)``. The empty prompt ("") is the
unconditional text of classifier-free guidance. Embeddings computed once (on a machine with the text
encoder) are stored as ``.npz`` or ``.safetensors`` with one ``(L, D)`` or ``(B, L, D)`` array per name.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.errors import InputError

MAX_TEXT_TOKENS = 512


def pad_text_states(states: jax.Array, attention_mask: jax.Array | None = None,
                    length: int = MAX_TEXT_TOKENS) -> jax.Array:
    """``(B, L, D)`` -> ``(B, length, D)``: padded tokens zeroed, then zero-padded (or cut) to ``length``."""
    if attention_mask is not None:
        states = jnp.where(attention_mask[..., None].astype(bool), states, 0.0)
    states = states[:, :length]
    return jnp.pad(states, ((0, 0), (0, length - states.shape[1]), (0, 0)))


def save_text_embeddings(path: str, embeddings: dict[str, np.ndarray]) -> None:
    """Write ``{name: (L, D) or (B, L, D)}`` float arrays to ``path`` (``.npz`` or ``.safetensors``)."""
    arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in embeddings.items()}
    if str(path).endswith(".safetensors"):
        from safetensors.numpy import save_file

        save_file(arrays, path)
    else:
        np.savez(path, **arrays)


def load_text_embeddings(path: str, name: str | None = None, *, dim: int | None = None,
                         length: int | None = MAX_TEXT_TOKENS) -> jax.Array | dict[str, jax.Array]:
    """Precomputed text embeddings from ``path``; one ``name`` as ``(B, L, D)`` or all as a dict.

    ``dim`` checks the width (4096 for Wan2.1); ``length`` zero-pads (or cuts) the sequence as the pipeline does.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"text embeddings file {path!r} does not exist; compute them with the umT5 encoder "
                         f"(avatar_jax.teacher.loaders.load_umt5) and save_text_embeddings")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        raw = load_file(path)
    else:
        with np.load(path) as f:
            raw = {k: f[k] for k in f.files}
    if name is not None and name not in raw:
        raise InputError(f"{path} has no text embedding {name!r}; it holds {sorted(raw)}")

    def prepare(key: str, a: np.ndarray) -> jax.Array:
        a = a[None] if a.ndim == 2 else a
        if a.ndim != 3 or (dim is not None and a.shape[-1] != dim):
            raise InputError(f"{path}: text embedding {key!r} has shape {a.shape}, expected (L, {dim or 'D'}) "
                             f"or (B, L, {dim or 'D'})")
        out = jnp.asarray(a, jnp.float32)
        return pad_text_states(out, length=length) if length is not None else out

    if name is not None:
        return prepare(name, raw[name])
    return {k: prepare(k, v) for k, v in raw.items()}
