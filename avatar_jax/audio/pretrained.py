"""A pretrained speech encoder (wav2vec2 or HuBERT from a local upstream directory) as an ``AudioEncoder``.

    audio (S,) @ 16 kHz ──► [zero-mean, unit-variance] ──► pad (rf-hop)/2 left, to ceil(S/hop) frames right
        ──► Wav2Vec2Model ──► hidden_states[layer] (ceil(S/hop), D) @ 16000/hop Hz   [stop-gradient when frozen]

The padding centres output ``i`` on ``(i + 1/2) · hop`` samples, so its window starts at ``i / feature_rate``
(``feature_offset_s`` 0) and every sample lands in a feature, as for the embedded encoder.

Configuration (``config.audio``): ``encoder = "wav2vec2"`` (HuBERT too: the directory's ``model_type`` decides),
``checkpoint_dir`` (config.json + model.safetensors or pytorch_model.bin, read with no network),
``encoder_layer`` (index into ``hidden_states``; -1: ``last_hidden_state``), ``encoder_lr_scale`` (0: frozen, the
default; else fine-tuned at that fraction of the learning rate). :func:`resolve` writes the architecture into
``audio.encoder_spec`` (JSON), so a workdir, its checkpoints and an export rebuild the model without the directory;
only a fresh initialisation reads the weights (:func:`load_weights`).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.audio.wav2vec2 import Wav2Vec2Model, Wav2Vec2Spec, normalize_audio
from avatar_jax.errors import ConfigError

EMBEDDED = "embedded"
PRETRAINED = ("wav2vec2",)  # HuBERT shares the layout; config.json's model_type tells them apart
SAMPLE_RATE = 16000


def is_pretrained(audio_config) -> bool:
    return str(audio_config.encoder) in PRETRAINED


def check(audio_config) -> None:
    """One clear error for an encoder the avatar cannot be built with (before any work)."""
    kind = str(audio_config.encoder)
    if kind == EMBEDDED:
        return
    if kind not in PRETRAINED:
        extra = (" (Whisper's encoder reads fixed 30 s windows: it is not a streaming driving encoder)"
                 if kind == "whisper" else "")
        raise ConfigError(f"audio.encoder={kind!r} cannot drive the avatar{extra}; expected one of "
                          f"{[EMBEDDED, *PRETRAINED]}")
    if not audio_config.get("encoder_spec") and not audio_config.get("checkpoint_dir"):
        raise ConfigError(f"audio.encoder={kind!r} needs audio.checkpoint_dir: a local folder of an upstream "
                          "wav2vec2 or HuBERT checkpoint (config.json and model.safetensors or pytorch_model.bin)")
    if float(audio_config.get("encoder_lr_scale", 0.0)) < 0:
        raise ConfigError(f"audio.encoder_lr_scale must be >= 0 (0: frozen), got {audio_config.encoder_lr_scale}")


def describe(checkpoint_dir: str) -> dict:
    """The architecture and input convention of the checkpoint folder, as JSON-able fields.

    ``normalize`` follows ``preprocessor_config.json``'s ``do_normalize`` (upstream's feature extractor default,
    True, when the file is absent); a sampling rate other than 16 kHz is refused."""
    from avatar_jax.audio import checkpoint

    upstream = checkpoint.read_config(checkpoint_dir, "wav2vec2")
    if upstream.model_type not in ("wav2vec2", "hubert"):
        raise checkpoint.CheckpointError(f"{checkpoint_dir} holds a {upstream.model_type!r} model; "
                                         "audio.encoder=wav2vec2 takes a wav2vec2 or HuBERT checkpoint")
    spec = checkpoint.wav2vec2_spec(upstream)
    normalize = True
    pre = os.path.join(checkpoint_dir, "preprocessor_config.json")
    if os.path.isfile(pre):
        try:
            with open(pre) as f:
                settings = json.load(f)
        except json.JSONDecodeError as e:
            raise checkpoint.CheckpointError(f"{pre} is not valid JSON: {e}") from e
        rate = int(settings.get("sampling_rate", SAMPLE_RATE))
        if rate != SAMPLE_RATE:
            raise checkpoint.CheckpointError(f"{pre}: the encoder expects {rate} Hz audio; only {SAMPLE_RATE} Hz "
                                             "encoders are supported")
        normalize = bool(settings.get("do_normalize", True))
    return dict(dataclasses.asdict(spec), normalize=normalize)


def _from_fields(fields: dict) -> tuple[Wav2Vec2Spec, bool]:
    fields = dict(fields)
    normalize = bool(fields.pop("normalize"))
    tuples = {k: tuple(v) for k, v in fields.items() if isinstance(v, list)}
    return Wav2Vec2Spec(**{**fields, **tuples}), normalize


def resolve(config):
    """``config`` with ``audio.encoder_spec`` filled from ``audio.checkpoint_dir`` (a copy; unchanged for the
    embedded encoder). A spec already there must match the folder: the same run cannot switch encoders."""
    check(config.audio)
    folder, stored = str(config.audio.get("checkpoint_dir", "")), config.audio.get("encoder_spec", "")
    if not is_pretrained(config.audio) or not folder or (stored and not os.path.isdir(folder)):
        return config  # embedded; or a run resumed where the upstream folder is gone (its weights are checkpointed)
    text = json.dumps(describe(folder), sort_keys=True)
    fields = json.loads(text)
    if stored:
        before = json.loads(stored)
        diffs = [f"{k}: {before.get(k)!r} -> {fields.get(k)!r}" for k in sorted(before.keys() | fields.keys())
                 if before.get(k) != fields.get(k)]
        if diffs:
            raise ConfigError(f"audio.checkpoint_dir={folder!r} holds another architecture than "
                              f"audio.encoder_spec, the encoder this run was built with ({'; '.join(diffs)})")
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.audio.encoder_spec = text
    return config


def spec_of(audio_config) -> tuple[Wav2Vec2Spec, bool]:
    """``(Wav2Vec2Spec, normalize)`` from ``audio.encoder_spec``, else from ``audio.checkpoint_dir``."""
    check(audio_config)
    stored = audio_config.get("encoder_spec", "")
    fields = json.loads(stored) if stored else describe(str(audio_config.checkpoint_dir))
    return _from_fields(fields)


class PretrainedSpeechEncoder(nnx.Module):
    """``audio (S,) float32 @ 16 kHz -> (ceil(S / hop), D)`` at ``16000 / hop`` Hz; see the module docstring."""

    sample_rate = SAMPLE_RATE
    feature_offset_s = 0.0  # output i is centred on (i + 1/2) hop: its window starts at i / feature_rate

    def __init__(self, spec: Wav2Vec2Spec, *, normalize: bool, layer: int = -1, frozen: bool = True,
                 rngs: nnx.Rngs):
        if not -1 <= layer <= spec.num_layers:
            raise ConfigError(f"audio.encoder_layer must be in [-1, {spec.num_layers}] (the encoder's hidden "
                              f"states; -1: last_hidden_state), got {layer}")
        self.model = Wav2Vec2Model(spec, rngs=rngs)
        self.dim = spec.hidden_size
        self.hop = spec.samples_per_frame
        self.feature_rate = SAMPLE_RATE / self.hop
        self.normalize, self.layer, self.frozen = bool(normalize), int(layer), bool(frozen)

    def num_features(self, num_samples: int) -> int:
        return -(-num_samples // self.hop)

    def __call__(self, audio: jax.Array) -> jax.Array:
        x = audio[None]
        if self.normalize:
            x = normalize_audio(x)
        rf, hop = self.model.spec.receptive_field, self.hop
        left = (rf - hop) // 2
        right = rf - hop - left + hop * self.num_features(audio.shape[0]) - audio.shape[0]
        out = self.model(jnp.pad(x, ((0, 0), (left, right))))
        feats = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        # frozen: no gradient reaches the encoder (the optimiser also leaves it alone, train/optimizer.py)
        return jax.lax.stop_gradient(feats[0]) if self.frozen else feats[0]


def build(audio_config, rngs: nnx.Rngs) -> PretrainedSpeechEncoder | None:
    """The configured pretrained encoder with freshly initialised weights (None for the embedded encoder);
    :func:`load_weights` gives the upstream weights to put in."""
    if not is_pretrained(audio_config):
        check(audio_config)
        return None
    spec, normalize = spec_of(audio_config)
    return PretrainedSpeechEncoder(spec, normalize=normalize, layer=int(audio_config.get("encoder_layer", -1)),
                                   frozen=float(audio_config.get("encoder_lr_scale", 0.0)) == 0.0, rngs=rngs)


def load_weights(audio_config) -> nnx.State:
    """The upstream weights of ``audio.checkpoint_dir`` as the ``nnx.Param`` state of
    :attr:`PretrainedSpeechEncoder.model`; refuses a folder whose architecture is not ``audio.encoder_spec``."""
    from avatar_jax.audio.checkpoint import load_wav2vec2

    if not audio_config.get("checkpoint_dir"):
        raise ConfigError("a fresh start with a pretrained audio encoder needs audio.checkpoint_dir (its weights)")
    spec, _ = spec_of(audio_config)
    model = load_wav2vec2(str(audio_config.checkpoint_dir))
    if model.spec != spec:
        raise ConfigError(f"audio.checkpoint_dir={audio_config.checkpoint_dir!r} holds another architecture than "
                          "audio.encoder_spec (the encoder this run was built with)")
    return nnx.state(model, nnx.Param)
