"""wav2vec2 encoder (and HuBERT, which shares its layout) in Flax NNX.

    audio (B, N) ──► conv feature encoder ──► (B, T, C) ──► LayerNorm + Linear ──► (B, T, D)
        ──► + positional conv (grouped, weight-normed, "same" padded, GELU) ──► transformer ──► (B, T, D)

Two layer-norm layouts exist upstream, both covered here:

- ``do_stable_layer_norm=False`` (wav2vec2-base): post-LN encoder (LayerNorm after the positional
  conv, then after attention and after the feed-forward in every layer).
- ``do_stable_layer_norm=True`` (wav2vec2-large-lv60 and friends): pre-LN encoder, one LayerNorm at the end.

Independently, ``feat_extract_norm`` is ``"group"`` (GroupNorm with one group per channel after the
first conv only, normalising over time) or ``"layer"`` (LayerNorm over channels after every conv).

``hidden_states`` follows upstream (transformers 5): ``num_layers + 1`` entries, the input of the first
layer then the output of each layer. In the pre-LN layout ``last_hidden_state`` is the last entry after
the final LayerNorm; in the post-LN layout it equals the last entry.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.audio import layers
from avatar_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Spec:
    """The architecture fields we need; defaults are wav2vec2-base."""

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    hidden_act: str = "gelu"
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False
    layer_norm_eps: float = 1e-5
    feat_proj_layer_norm: bool = True  # HuBERT checkpoints may switch the projection LayerNorm off
    model_type: str = "wav2vec2"

    def __post_init__(self):
        if not (len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride)):
            raise ConfigError(
                f"conv_dim, conv_kernel and conv_stride must have one entry per conv layer, got "
                f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}"
            )
        if self.feat_extract_norm not in ("group", "layer"):
            raise ConfigError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_conv_pos_embedding_groups "
                f"{self.num_conv_pos_embedding_groups}"
            )
        layers.activation(self.hidden_act)
        layers.activation(self.feat_extract_activation)

    @property
    def samples_per_frame(self) -> int:
        """Hop between output frames, in samples (320 = 20 ms at 16 kHz for the base layout)."""
        hop = 1
        for s in self.conv_stride:
            hop *= s
        return hop

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame of the conv feature encoder (400 for the base layout)."""
        field, hop = 1, 1
        for k, s in zip(self.conv_kernel, self.conv_stride, strict=True):
            field += (k - 1) * hop
            hop *= s
        return field

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` of audio."""
        return layers.conv_out_length(num_samples, self.conv_kernel, self.conv_stride)


class Wav2Vec2Output(NamedTuple):
    last_hidden_state: jax.Array  # (B, T, D)
    hidden_states: tuple[jax.Array, ...]  # num_layers + 1 of (B, T, D)
    extract_features: jax.Array  # (B, T, C): normalised conv features (input of the projection)


class FeatureEncoder(nnx.Module):
    """Strided conv stack on raw audio: ``(B, N)`` -> ``(B, T, conv_dim[-1])``."""

    def __init__(self, spec: Wav2Vec2Spec, *, rngs: nnx.Rngs):
        self.act = layers.activation(spec.feat_extract_activation)
        self.layer_norm = spec.feat_extract_norm == "layer"
        convs, norms = [], []
        cin = 1
        for i, (cout, k, s) in enumerate(zip(spec.conv_dim, spec.conv_kernel, spec.conv_stride, strict=True)):
            convs.append(layers.conv1d(cin, cout, k, stride=s, use_bias=spec.conv_bias, rngs=rngs))
            if self.layer_norm:
                norms.append(layers.layer_norm(cout, 1e-5, "conv_out", rngs=rngs))
            elif i == 0:
                # one group per channel: normalise each channel over time (and only after the first conv)
                norms.append(nnx.GroupNorm(cout, num_groups=cout, epsilon=1e-5, use_fast_variance=False, rngs=rngs,
                                           scale_metadata=layers.axes("conv_out"),
                                           bias_metadata=layers.axes("conv_out")))
            cin = cout
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)

    def __call__(self, audio: jax.Array) -> jax.Array:
        x = audio[..., None]
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.norms):
                x = self.norms[i](x)
            x = self.act(x)
        return x


class PositionalConv(nnx.Module):
    """Relative positions from a wide grouped conv over time; even kernels drop the last output frame."""

    def __init__(self, spec: Wav2Vec2Spec, *, rngs: nnx.Rngs):
        k = spec.num_conv_pos_embeddings
        self.trim = 1 if k % 2 == 0 else 0
        self.act = layers.activation(spec.feat_extract_activation)
        self.conv = layers.conv1d(spec.hidden_size, spec.hidden_size, k, padding=k // 2,
                                  groups=spec.num_conv_pos_embedding_groups, in_axis=None, out_axis="embed",
                                  rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(x)
        if self.trim:
            y = y[:, :-self.trim]
        return self.act(y)


class FeedForward(nnx.Module):
    def __init__(self, dim: int, hidden: int, act: str, *, rngs: nnx.Rngs):
        self.intermediate_dense = layers.linear(dim, hidden, "embed", "mlp", rngs=rngs)
        self.output_dense = layers.linear(hidden, dim, "mlp", "embed", rngs=rngs)
        self.act = layers.activation(act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output_dense(self.act(self.intermediate_dense(x)))


class EncoderLayer(nnx.Module):
    """One transformer layer; ``pre_ln`` picks the stable (pre-LN) or the original (post-LN) order."""

    def __init__(self, spec: Wav2Vec2Spec, *, rngs: nnx.Rngs):
        d = spec.hidden_size
        self.pre_ln = spec.do_stable_layer_norm
        self.attention = layers.Attention(d, spec.num_heads, rngs=rngs)
        self.layer_norm = layers.layer_norm(d, spec.layer_norm_eps, rngs=rngs)
        self.feed_forward = FeedForward(d, spec.intermediate_size, spec.hidden_act, rngs=rngs)
        self.final_layer_norm = layers.layer_norm(d, spec.layer_norm_eps, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        if self.pre_ln:
            x = x + self.attention(self.layer_norm(x), mask=mask)
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x, mask=mask))
        return self.final_layer_norm(x + self.feed_forward(x))


class Wav2Vec2Model(nnx.Module):
    """The encoder up to ``last_hidden_state`` (no task head); :mod:`avatar_jax.audio.checkpoint` fills it."""

    def __init__(self, spec: Wav2Vec2Spec, *, rngs: nnx.Rngs):
        self.spec = spec
        d = spec.hidden_size
        self.feature_extractor = FeatureEncoder(spec, rngs=rngs)
        self.projection_norm = (
            layers.layer_norm(spec.conv_dim[-1], spec.layer_norm_eps, "conv_in", rngs=rngs)
            if spec.feat_proj_layer_norm else None
        )
        self.projection = layers.linear(spec.conv_dim[-1], d, "conv_in", "embed", rngs=rngs)
        self.pos_conv = PositionalConv(spec, rngs=rngs)
        self.encoder_norm = layers.layer_norm(d, spec.layer_norm_eps, rngs=rngs)
        self.layers = nnx.List([EncoderLayer(spec, rngs=rngs) for _ in range(spec.num_layers)])

    def __call__(self, audio: jax.Array, frame_mask: jax.Array | None = None) -> Wav2Vec2Output:
        """``audio (B, N)`` float, 16 kHz; optional ``frame_mask (B, T)`` bool, True on real frames.

        With a mask, padded frames are zeroed before the positional conv and never attended to
        (upstream semantics; see :func:`frame_mask_from_lengths`).
        """
        chex.assert_rank(audio, 2)
        features = self.feature_extractor(audio)
        if self.projection_norm is not None:
            features = self.projection_norm(features)
        x = self.projection(features)
        attn_mask = None
        if frame_mask is not None:
            chex.assert_shape(frame_mask, x.shape[:2])
            x = jnp.where(frame_mask[..., None], x, 0.0)
            attn_mask = frame_mask[:, None, None, :]
        x = x + self.pos_conv(x)
        if not self.spec.do_stable_layer_norm:
            x = self.encoder_norm(x)
        hidden = [x]
        for layer in self.layers:
            x = layer(x, attn_mask)
            hidden.append(x)
        if self.spec.do_stable_layer_norm:
            x = self.encoder_norm(x)
        return Wav2Vec2Output(last_hidden_state=x, hidden_states=tuple(hidden), extract_features=features)


def normalize_audio(audio: jax.Array, sample_mask: jax.Array | None = None, eps: float = 1e-7) -> jax.Array:
    """Zero-mean, unit-variance per row, as upstream's feature extractor does when its
    ``preprocessor_config.json`` has ``do_normalize: true`` (wav2vec2-large-lv60 and most HuBERTs;
    wav2vec2-base-960h takes raw audio). ``audio (B, N)``; padded samples (mask False) are ignored
    in the statistics and set to 0.
    """
    chex.assert_rank(audio, 2)
    mask = jnp.ones_like(audio, bool) if sample_mask is None else sample_mask
    n = jnp.maximum(mask.sum(-1, keepdims=True), 1)
    mean = jnp.where(mask, audio, 0.0).sum(-1, keepdims=True) / n
    var = jnp.where(mask, (audio - mean) ** 2, 0.0).sum(-1, keepdims=True) / n
    return jnp.where(mask, (audio - mean) / jnp.sqrt(var + eps), 0.0)


def frame_mask_from_lengths(spec: Wav2Vec2Spec, sample_lengths: jax.Array, num_frames: int) -> jax.Array:
    """``(B,)`` valid sample counts -> ``(B, num_frames)`` bool mask of the frames they produce."""
    lengths = sample_lengths
    for k, s in zip(spec.conv_kernel, spec.conv_stride, strict=True):
        lengths = (lengths - k) // s + 1
    return jnp.arange(num_frames)[None, :] < lengths[:, None]


def encode_fn(model: Wav2Vec2Model, layer: int | None = None):
    """A jitted ``audio (B, N) [, frame_mask] -> (B, T, D)``: ``hidden_states[layer]``, or by default
    ``last_hidden_state``."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, audio, frame_mask=None):
        out = nnx.merge(graphdef, state)(audio, frame_mask)
        return out.last_hidden_state if layer is None else out.hidden_states[layer]

    return lambda audio, frame_mask=None: run(state, audio, frame_mask)
