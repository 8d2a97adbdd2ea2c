"""Whisper (encoder + decoder) in Flax NNX, with jitted greedy decoding on a key/value cache.

    log-mel (B, T, n_mels) ──► conv k3 + GELU ──► conv k3 s2 + GELU ──► + sinusoids ──► pre-LN layers ──► LN
                                                                                      │ (B, T/2, D)
    tokens (B, L) ──► embed + learned positions ──► pre-LN layers (causal self-attn, cross-attn, MLP) ──► LN
                  ──► logits = h · embed_tokensᵀ (the output projection is tied to the token table)

Layout notes: our mel input is time-major ``(B, T, n_mels)`` (upstream ``input_features`` is
``(B, n_mels, T)``: transpose). The encoder accepts any ``T <= 2 * max_source_positions`` (upstream
insists on exactly 3000 frames = 30 s; pad with the log-mel of silence to reproduce it).
``hidden_states`` follow the upstream convention (input of the first layer, each layer's output, the
last entry replaced by the output after the final LayerNorm).

Upstream conventions that the config does not show (transformers 4.26 to 5.23 alike):
``activation_function`` selects only the feed-forward activation, the two input convolutions always
use exact GELU; ``scale_embedding`` is computed upstream but never applied (neither to the decoder's
token embeddings nor on the encoder side), so it has no effect here either.

Decoding: :func:`greedy_decode` runs a ``lax.while_loop`` over positions (until every row is done)
with a per-layer key/value cache (cross-attention keys and values computed once from the encoder
output), under one ``jax.jit``. Prompt tokens are fed through the same step and forced; suppression
follows upstream ``generate``: ``suppress_tokens`` at every step, ``begin_suppress_tokens`` at the
first generated token; after ``eos`` a row emits ``pad``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avatar_jax.audio import layers
from avatar_jax.errors import ConfigError, InputError


@dataclasses.dataclass(frozen=True)
class WhisperSpec:
    """Architecture fields; defaults are whisper-tiny."""

    vocab_size: int = 51865
    num_mel_bins: int = 80
    d_model: int = 384
    encoder_layers: int = 4
    encoder_attention_heads: int = 6
    decoder_layers: int = 4
    decoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    decoder_ffn_dim: int = 1536
    max_source_positions: int = 1500
    max_target_positions: int = 448
    activation_function: str = "gelu"  # feed-forward only (encoder and decoder); input convs are always GELU

    def __post_init__(self):
        layers.activation(self.activation_function)

    @property
    def max_mel_frames(self) -> int:
        return 2 * self.max_source_positions


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """Special tokens and suppression lists for decoding (upstream ``generation_config.json``)."""

    decoder_start_token_id: int = 50258
    eos_token_id: int = 50257
    pad_token_id: int = 50257
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    no_timestamps_token_id: int | None = None
    is_multilingual: bool | None = False  # None: generation_config does not say (no English-only check)
    lang_to_id: tuple[tuple[str, int], ...] = ()
    task_to_id: tuple[tuple[str, int], ...] = ()
    # (position, token) pairs of the deprecated upstream flag, e.g. ((1, None), (2, 50359)); None = detect
    forced_decoder_ids: tuple[tuple[int, int | None], ...] = ()


class EncoderOutput(NamedTuple):
    last_hidden_state: jax.Array  # (B, S, D)
    hidden_states: tuple[jax.Array, ...]  # encoder_layers + 1 of (B, S, D)


class DecoderOutput(NamedTuple):
    logits: jax.Array  # (B, L, V)
    last_hidden_state: jax.Array  # (B, L, D)
    hidden_states: tuple[jax.Array, ...]  # decoder_layers + 1 of (B, L, D)


class MLP(nnx.Module):
    def __init__(self, d: int, hidden: int, act: str, *, rngs: nnx.Rngs):
        self.fc1 = layers.linear(d, hidden, "embed", "mlp", rngs=rngs)
        self.fc2 = layers.linear(hidden, d, "mlp", "embed", rngs=rngs)
        self.act = layers.activation(act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nnx.Module):
    def __init__(self, spec: WhisperSpec, *, rngs: nnx.Rngs):
        d = spec.d_model
        self.self_attn = layers.Attention(d, spec.encoder_attention_heads, k_bias=False, rngs=rngs)
        self.self_attn_layer_norm = layers.layer_norm(d, 1e-5, rngs=rngs)
        self.mlp = MLP(d, spec.encoder_ffn_dim, spec.activation_function, rngs=rngs)
        self.final_layer_norm = layers.layer_norm(d, 1e-5, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.mlp(self.final_layer_norm(x))


class WhisperEncoder(nnx.Module):
    def __init__(self, spec: WhisperSpec, *, rngs: nnx.Rngs):
        self.spec = spec
        d = spec.d_model
        self.act = layers.activation("gelu")  # whatever activation_function says, like upstream
        self.conv1 = layers.conv1d(spec.num_mel_bins, d, 3, padding=1, in_axis=None, out_axis="embed", rngs=rngs)
        self.conv2 = layers.conv1d(d, d, 3, stride=2, padding=1, in_axis=None, out_axis="embed", rngs=rngs)
        # fixed upstream, but stored in checkpoints: we load it like any other weight
        self.embed_positions = nnx.Param(layers.sinusoids(spec.max_source_positions, d), **layers.axes(None, "embed"))
        self.layers = nnx.List([EncoderLayer(spec, rngs=rngs) for _ in range(spec.encoder_layers)])
        self.layer_norm = layers.layer_norm(d, 1e-5, rngs=rngs)

    def __call__(self, mel: jax.Array) -> EncoderOutput:
        """``mel (B, T, n_mels)`` with ``T <= 2 * max_source_positions`` -> ``(B, ceil(T/2), D)``."""
        chex.assert_rank(mel, 3)
        if mel.shape[-1] != self.spec.num_mel_bins:
            raise InputError(f"whisper expects {self.spec.num_mel_bins} mel bins (B, T, n_mels), got {mel.shape}")
        if mel.shape[1] > self.spec.max_mel_frames:
            raise InputError(
                f"whisper encodes at most {self.spec.max_mel_frames} mel frames per window, got {mel.shape[1]}; "
                f"split long audio (avatar_jax.audio.chunked)"
            )
        x = self.act(self.conv1(mel))
        x = self.act(self.conv2(x))
        x = x + self.embed_positions[...][: x.shape[1]]
        hidden = [x]
        for layer in self.layers:
            x = layer(x)
            hidden.append(x)
        x = self.layer_norm(x)
        hidden[-1] = x
        return EncoderOutput(x, tuple(hidden))


class DecoderLayer(nnx.Module):
    def __init__(self, spec: WhisperSpec, *, rngs: nnx.Rngs):
        d, h = spec.d_model, spec.decoder_attention_heads
        self.self_attn = layers.Attention(d, h, k_bias=False, rngs=rngs)
        self.self_attn_layer_norm = layers.layer_norm(d, 1e-5, rngs=rngs)
        self.encoder_attn = layers.Attention(d, h, k_bias=False, rngs=rngs)
        self.encoder_attn_layer_norm = layers.layer_norm(d, 1e-5, rngs=rngs)
        self.mlp = MLP(d, spec.decoder_ffn_dim, spec.activation_function, rngs=rngs)
        self.final_layer_norm = layers.layer_norm(d, 1e-5, rngs=rngs)

    def __call__(self, x, mask, cross_kv, cache=None, position=None):
        """``x (B, L, D)``, ``mask`` broadcastable to ``(B, H, L, S)``, ``cross_kv`` keys/values ``(B, S', H, Dh)``.

        Without ``cache`` the self-attention keys are ``x``'s own; with ``cache`` (keys, values
        ``(B, max_len, H, Dh)``) this step's keys are written at ``position`` first. Returns (x, cache).
        """
        h = self.self_attn_layer_norm(x)
        k, v = self.self_attn.keys_values(h)
        if cache is not None:
            k = jax.lax.dynamic_update_slice_in_dim(cache[0], k.astype(cache[0].dtype), position, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(cache[1], v.astype(cache[1].dtype), position, axis=1)
        x = x + self.self_attn.attend(h, k, v, mask)
        x = x + self.encoder_attn.attend(self.encoder_attn_layer_norm(x), *cross_kv)
        return x + self.mlp(self.final_layer_norm(x)), (k, v)


class WhisperDecoder(nnx.Module):
    def __init__(self, spec: WhisperSpec, *, rngs: nnx.Rngs):
        self.spec = spec
        d = spec.d_model
        self.embed_tokens = layers.embed(spec.vocab_size, d, "vocab", rngs=rngs)
        self.embed_positions = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (spec.max_target_positions, d)), **layers.axes(None, "embed")
        )
        self.layers = nnx.List([DecoderLayer(spec, rngs=rngs) for _ in range(spec.decoder_layers)])
        self.layer_norm = layers.layer_norm(d, 1e-5, rngs=rngs)

    def _embed(self, tokens: jax.Array, offset) -> jax.Array:
        pos = jax.lax.dynamic_slice_in_dim(self.embed_positions[...], offset, tokens.shape[1], axis=0)
        return self.embed_tokens(tokens) + pos  # no sqrt(d_model) scale, even with scale_embedding (upstream)

    def cross_keys_values(self, enc: jax.Array) -> tuple[tuple[jax.Array, jax.Array], ...]:
        """Per layer, keys and values ``(B, S, H, Dh)`` of the encoder output (computed once per utterance)."""
        return tuple(layer.encoder_attn.keys_values(enc) for layer in self.layers)

    def __call__(self, tokens: jax.Array, enc: jax.Array) -> DecoderOutput:
        """Full causal pass: ``tokens (B, L)`` int, ``enc (B, S, D)``."""
        chex.assert_rank(tokens, 2)
        if tokens.shape[1] > self.spec.max_target_positions:
            raise InputError(f"at most {self.spec.max_target_positions} decoder tokens, got {tokens.shape[1]}")
        x = self._embed(tokens, 0)
        length = tokens.shape[1]
        causal = jnp.tril(jnp.ones((length, length), bool))
        hidden = [x]
        for layer, cross in zip(self.layers, self.cross_keys_values(enc), strict=True):
            x, _ = layer(x, causal, cross)
            hidden.append(x)
        x = self.layer_norm(x)
        hidden[-1] = x
        return DecoderOutput(self.embed_tokens.attend(x), x, tuple(hidden))

    def step(self, token: jax.Array, position, cache, cross):
        """One token per row at ``position``: ``token (B,)`` -> logits ``(B, V)`` and the updated cache.

        ``cache``: per layer ``(k, v)`` of shape ``(B, max_len, H, Dh)``; slots ``> position`` are ignored.
        """
        x = self._embed(token[:, None], position)
        max_len = cache[0][0].shape[1]
        mask = (jnp.arange(max_len) <= position)[None, None, None, :]
        new_cache = []
        for layer, layer_cache, kv in zip(self.layers, cache, cross, strict=True):
            x, layer_cache = layer(x, mask, kv, layer_cache, position)
            new_cache.append(layer_cache)
        x = self.layer_norm(x)
        return self.embed_tokens.attend(x)[:, 0], tuple(new_cache)


class WhisperModel(nnx.Module):
    """Encoder + decoder with the tied output projection (``WhisperForConditionalGeneration``)."""

    def __init__(self, spec: WhisperSpec, *, rngs: nnx.Rngs, generation: GenerationSettings | None = None):
        self.spec = spec
        self.generation = generation or GenerationSettings()
        self.encoder = WhisperEncoder(spec, rngs=rngs)
        self.decoder = WhisperDecoder(spec, rngs=rngs)

    def __call__(self, mel: jax.Array, tokens: jax.Array) -> tuple[EncoderOutput, DecoderOutput]:
        enc = self.encoder(mel)
        return enc, self.decoder(tokens, enc.last_hidden_state)


def _suppress_mask(vocab: int, ids) -> np.ndarray:
    mask = np.zeros((vocab,), bool)
    ids = [i for i in ids if 0 <= i < vocab]
    mask[ids] = True
    return mask


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "eos", "pad"))
def _greedy(graphdef, state, mel, prompt, suppress, begin_suppress, *, max_new_tokens, eos, pad):
    model = nnx.merge(graphdef, state)
    dec = model.decoder
    batch, prompt_len = prompt.shape
    total = prompt_len + max_new_tokens
    enc = model.encoder(mel).last_hidden_state
    cross = dec.cross_keys_values(enc)
    heads = model.spec.decoder_attention_heads
    head_dim = model.spec.d_model // heads
    cache = tuple((jnp.zeros((batch, total, heads, head_dim), enc.dtype),) * 2 for _ in dec.layers)
    tokens = jnp.full((batch, total), pad, jnp.int32).at[:, :prompt_len].set(prompt)
    done = jnp.zeros((batch,), bool)

    def body(carry):
        i, tokens, cache, done = carry
        logits, cache = dec.step(tokens[:, i], i, cache, cross)
        logits = jnp.where(suppress, -jnp.inf, logits)
        logits = jnp.where(begin_suppress & (i + 1 == prompt_len), -jnp.inf, logits)
        best = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        generating = i + 1 >= prompt_len
        new = jnp.where(generating, jnp.where(done, pad, best), tokens[:, i + 1])
        done = done | (generating & (best == eos))
        return i + 1, tokens.at[:, i + 1].set(new), cache, done

    def running(carry):  # stop early once every row has emitted eos (the rest is already pad)
        i, _, _, done = carry
        return (i < total - 1) & ~jnp.all(done)

    _, tokens, _, _ = jax.lax.while_loop(running, body, (jnp.int32(0), tokens, cache, done))
    return tokens


def greedy_decode(model: WhisperModel, mel: jax.Array, prompt, max_new_tokens: int = 32,
                  settings: GenerationSettings | None = None) -> jax.Array:
    """Greedy tokens ``(B, P + max_new_tokens)`` (the prompt included) for ``mel (B, T, n_mels)``.

    ``prompt``: ``(P,)`` shared or ``(B, P)`` per row, e.g. ``[<|startoftranscript|>, <|en|>,
    <|transcribe|>, <|notimestamps|>]`` (see :func:`default_prompt`). Rows that emit ``eos`` continue
    with ``pad``.
    """
    settings = settings or model.generation
    prompt = jnp.asarray(prompt, jnp.int32)
    if prompt.ndim == 1:
        prompt = jnp.broadcast_to(prompt, (mel.shape[0], prompt.shape[0]))
    chex.assert_shape(prompt, (mel.shape[0], None))
    if prompt.shape[1] + max_new_tokens > model.spec.max_target_positions:
        raise InputError(
            f"prompt ({prompt.shape[1]}) + max_new_tokens ({max_new_tokens}) exceeds the decoder's "
            f"{model.spec.max_target_positions} positions"
        )
    vocab = model.spec.vocab_size
    graphdef, state = nnx.split(model)
    return _greedy(graphdef, state, mel, prompt, jnp.asarray(_suppress_mask(vocab, settings.suppress_tokens)),
                   jnp.asarray(_suppress_mask(vocab, settings.begin_suppress_tokens)),
                   max_new_tokens=max_new_tokens, eos=settings.eos_token_id, pad=settings.pad_token_id)


def detect_language(model: WhisperModel, mel: jax.Array, settings: GenerationSettings | None = None) -> jax.Array:
    """``(B,)`` the most likely language token after ``<|startoftranscript|>`` (multilingual models)."""
    settings = settings or model.generation
    if not settings.lang_to_id:
        raise ConfigError("this Whisper checkpoint has no language tokens (generation_config lang_to_id)")
    ids = np.asarray([i for _, i in settings.lang_to_id])
    start = jnp.full((mel.shape[0], 1), settings.decoder_start_token_id, jnp.int32)
    _, dec = model(mel, start)
    return jnp.asarray(ids)[jnp.argmax(dec.logits[:, -1, ids], axis=-1)]


def _init_tokens(settings: GenerationSettings, language: str | None, task: str | None) -> list[int | None]:
    """Upstream's short-form start tokens (``generate`` without timestamps), with ``None`` in the
    language slot when the language is to be detected.

    Order as upstream: start; then ``forced_decoder_ids`` (positions 1, 2... consecutively) when
    neither ``language`` nor ``task`` is given; the language (given, or a detection slot when the
    checkpoint has ``lang_to_id`` and no language token yet); the task (given, or ``transcribe`` when
    only the language is given); ``no_timestamps`` last.
    """
    if settings.is_multilingual is False and (language is not None or task is not None):
        raise ConfigError("this Whisper checkpoint is English-only (is_multilingual false): no language or task")
    tokens: list[int | None] = [settings.decoder_start_token_id]
    if language is None and task is None and settings.forced_decoder_ids:
        forced = list(settings.forced_decoder_ids)
        if forced[0][0] == 1:
            while forced and forced[0][0] == len(tokens):
                tokens.append(forced.pop(0)[1])
        if forced:
            raise ConfigError(f"forced_decoder_ids {list(settings.forced_decoder_ids)} do not follow Whisper's prompt "
                              f"pattern (one entry for each position 1, 2, ...)")
    langs, tasks = dict(settings.lang_to_id), dict(settings.task_to_id)
    lang_id = None
    if language is not None:
        token = language if language.startswith("<|") else f"<|{language}|>"
        if token not in langs:
            raise ConfigError(f"unknown language {language!r}; known: {', '.join(sorted(langs))[:200]}")
        lang_id = langs[token]
    if lang_id is not None or (langs and (len(tokens) == 1 or tokens[1] is None)):
        if len(tokens) > 1:
            tokens[1] = lang_id
        else:
            tokens.append(lang_id)
    if task is not None:
        if task not in tasks:
            raise ConfigError(f"unknown task {task!r}; known: {sorted(tasks)}")
        tokens.append(tasks[task])
    elif language is not None and tasks and not any(t in tokens for t in tasks.values()):
        tokens.append(tasks["transcribe"])
    if settings.no_timestamps_token_id is not None and tokens[-1] != settings.no_timestamps_token_id:
        tokens.append(settings.no_timestamps_token_id)
    return tokens


def default_prompt(settings: GenerationSettings, language: str | None = None, task: str | None = None):
    """Upstream's short-form prompt: start, [language], [task], then no-timestamps (see :func:`_init_tokens`).

    ``language`` is a token like ``"<|en|>"`` or a code ``"en"``; ``task`` ``"transcribe"`` or
    ``"translate"``. With neither, the checkpoint's ``forced_decoder_ids`` apply, like upstream. When
    the language is to be detected (multilingual checkpoint, none given) the language token is left
    out: insert the result of :func:`detect_language` at index 1 per row yourself (:func:`transcribe` does).
    """
    return [t for t in _init_tokens(settings, language, task) if t is not None]


def strip_generated(tokens, prompt_len: int, settings: GenerationSettings) -> list[list[int]]:
    """Python lists of the generated tokens per row, without the prompt, ``eos`` and padding."""
    out = []
    for row in np.asarray(tokens)[:, prompt_len:]:
        row = row.tolist()
        if settings.eos_token_id in row:
            row = row[: row.index(settings.eos_token_id)]
        out.append(row)
    return out


def transcribe(model: WhisperModel, mel: jax.Array, tokenizer_dir: str, *, language: str | None = None,
               task: str | None = None, max_new_tokens: int = 96) -> list[str]:
    """Text per row: greedy decoding from upstream's prompt (:func:`default_prompt`; the language detected
    per row when it is not given on a multilingual checkpoint) + the upstream tokenizer files.

    ``tokenizer_dir`` is the checkpoint directory (``vocab.json``, ``merges.txt``...), read through
    ``transformers.WhisperTokenizer`` (no torch).
    """
    settings = model.generation
    base = _init_tokens(settings, language, task)
    rest = [t for t in base[2:] if t is not None]
    if settings.lang_to_id and len(base) > 1 and base[1] is None:  # language slot: detect per row
        lang = np.asarray(detect_language(model, mel, settings))
        prompt = np.asarray([[base[0], int(t), *rest] for t in lang], np.int32)
    else:
        prompt = np.asarray([t for t in base if t is not None], np.int32)
    tokens = greedy_decode(model, mel, prompt, max_new_tokens, settings)
    rows = strip_generated(tokens, prompt.shape[-1], settings)
    has_files = os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")) or all(
        os.path.isfile(os.path.join(tokenizer_dir, f)) for f in ("vocab.json", "merges.txt"))
    if not has_files:
        raise InputError(
            f"no Whisper tokenizer files in {tokenizer_dir} (vocab.json + merges.txt, or tokenizer.json); fetch "
            f"them with the checkpoint, e.g. openai/whisper-tiny"
        )
    from transformers import WhisperTokenizer

    tokenizer = WhisperTokenizer.from_pretrained(tokenizer_dir)
    return [tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]
