"""Load upstream (Hugging Face ``transformers``) wav2vec2 / HuBERT / Whisper directories into our NNX modules.

A directory holds ``config.json`` (read through the ``transformers`` config classes, which need no
torch), optionally ``generation_config.json`` (Whisper), and weights as ``model.safetensors``,
``pytorch_model.bin`` (read by :mod:`avatar_jax.audio.torch_pickle`, no torch), or a sharded
``*.index.json`` of either. Key names follow upstream; task-model prefixes (``wav2vec2.``,
``hubert.``, ``model.``) are found automatically, task heads (``lm_head``, ``proj_out``...) are ignored.

Layout changes on the way in: torch ``Linear`` weights ``(out, in)`` become kernels ``(in, out)``;
``Conv1d`` weights ``(out, in/groups, k)`` become ``(k, in/groups, out)``; the positional conv's weight
norm (``weight_g``/``weight_v``, or ``parametrizations.weight.original0/1``) is folded into one kernel.

Every failure is a :class:`CheckpointError` naming what is wrong (missing file or tensor, shape,
unknown architecture) and, for a missing directory, what to fetch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from avatar_jax.audio.torch_pickle import load_torch_state_dict
from avatar_jax.audio.wav2vec2 import Wav2Vec2Model, Wav2Vec2Spec
from avatar_jax.audio.whisper import GenerationSettings, WhisperModel, WhisperSpec
from avatar_jax.errors import ConfigError, InputError

# model_type -> a public checkpoint to fetch when a directory is missing
FETCH_HINTS = {
    "wav2vec2": "facebook/wav2vec2-base-960h",
    "hubert": "facebook/hubert-base-ls960",
    "whisper": "openai/whisper-tiny",
}


class CheckpointError(InputError):
    """An upstream checkpoint directory is missing, incomplete or of an unsupported kind."""


def _fetch_advice(kind: str) -> str:
    repo = FETCH_HINTS.get(kind, "the upstream checkpoint")
    return (f"fetch {repo} on a machine with network (e.g. `hf download {repo} --local-dir DIR`: config.json "
            f"and model.safetensors or pytorch_model.bin) and copy the folder here")


def _check_dir(path: str, kind: str) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{kind} checkpoint directory {path!r} does not exist; {_fetch_advice(kind)}")
    return path


# ---------------------------------------------------------------------------------------------- config


def read_config(path: str, kind: str = "wav2vec2"):
    """The ``transformers`` config object of the checkpoint at ``path`` (wav2vec2, hubert or whisper)."""
    path = _check_dir(path, kind)
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        raise CheckpointError(f"{path} has no config.json, so its architecture is unknown; {_fetch_advice(kind)}")
    with open(file) as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{file} is not valid JSON: {e}") from e
    model_type = raw.get("model_type")
    import transformers

    classes = {"wav2vec2": transformers.Wav2Vec2Config, "hubert": transformers.HubertConfig,
               "whisper": transformers.WhisperConfig}
    if model_type not in classes:
        raise CheckpointError(
            f"{file}: unknown architecture model_type={model_type!r} (architectures {raw.get('architectures')}); "
            f"supported: {', '.join(classes)}"
        )
    return classes[model_type].from_pretrained(path)


def _spec(cls, **fields):
    """``cls(**fields)``, an unsupported setting (activation, layout) reported as a :class:`CheckpointError`."""
    try:
        return cls(**fields)
    except ConfigError as e:
        raise CheckpointError(f"unsupported {cls.__name__.removesuffix('Spec')} checkpoint: {e}") from e


def wav2vec2_spec(config) -> Wav2Vec2Spec:
    """Our :class:`Wav2Vec2Spec` from a ``Wav2Vec2Config`` / ``HubertConfig``."""
    # only Wav2Vec2Model runs an adapter after the encoder; HubertModel ignores add_adapter
    if config.model_type == "wav2vec2" and getattr(config, "add_adapter", False):
        raise CheckpointError("wav2vec2 checkpoints with add_adapter=True (adapter layers) are not supported")
    # per-layer attention adapters (MMS): upstream adds them to the stable-layer-norm layers only
    if getattr(config, "adapter_attn_dim", None) is not None and config.do_stable_layer_norm:
        raise CheckpointError(
            f"{config.model_type} checkpoints with adapter_attn_dim={config.adapter_attn_dim} (per-layer attention "
            f"adapters, e.g. MMS) are not supported"
        )
    if getattr(config, "conv_pos_batch_norm", False):
        raise CheckpointError("HuBERT checkpoints with conv_pos_batch_norm=True are not supported")
    if config.model_type == "hubert":
        # HuBERT's feature extractor norm and projection LayerNorm are separate switches upstream
        proj_ln = bool(getattr(config, "feat_proj_layer_norm", True))
    else:
        proj_ln = True
    return _spec(Wav2Vec2Spec,
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        conv_dim=tuple(config.conv_dim),
        conv_kernel=tuple(config.conv_kernel),
        conv_stride=tuple(config.conv_stride),
        conv_bias=bool(config.conv_bias),
        feat_extract_norm=config.feat_extract_norm,
        feat_extract_activation=config.feat_extract_activation,
        hidden_act=config.hidden_act,
        num_conv_pos_embeddings=config.num_conv_pos_embeddings,
        num_conv_pos_embedding_groups=config.num_conv_pos_embedding_groups,
        do_stable_layer_norm=bool(config.do_stable_layer_norm),
        layer_norm_eps=float(config.layer_norm_eps),
        feat_proj_layer_norm=proj_ln,
        model_type=config.model_type,
    )


def whisper_spec(config) -> WhisperSpec:
    """Our :class:`WhisperSpec` from a ``WhisperConfig``."""
    if not getattr(config, "tie_word_embeddings", True):
        raise CheckpointError("Whisper checkpoints with an untied output projection are not supported")
    # Not read on purpose: scale_embedding (upstream computes the scale and never applies it) and the
    # training-only fields (dropouts, layerdrop, apply_spec_augment / mask_*: no effect in eval mode).
    return _spec(WhisperSpec,
        vocab_size=config.vocab_size,
        num_mel_bins=config.num_mel_bins,
        d_model=config.d_model,
        encoder_layers=config.encoder_layers,
        encoder_attention_heads=config.encoder_attention_heads,
        decoder_layers=config.decoder_layers,
        decoder_attention_heads=config.decoder_attention_heads,
        encoder_ffn_dim=config.encoder_ffn_dim,
        decoder_ffn_dim=config.decoder_ffn_dim,
        max_source_positions=config.max_source_positions,
        max_target_positions=config.max_target_positions,
        activation_function=config.activation_function,
    )


def generation_settings(path: str, config) -> GenerationSettings:
    """Decoding settings from ``generation_config.json`` when present, else from ``config.json``."""
    gen = {}
    file = os.path.join(path, "generation_config.json")
    if os.path.isfile(file):
        with open(file) as f:
            gen = json.load(f)

    def pick(name, default=None):
        value = gen.get(name)
        return getattr(config, name, default) if value is None else value

    def single(value):
        return value[0] if isinstance(value, list | tuple) else value

    eos = single(pick("eos_token_id"))
    pad = pick("pad_token_id")
    return GenerationSettings(
        decoder_start_token_id=int(pick("decoder_start_token_id")),
        eos_token_id=int(eos),
        pad_token_id=int(eos if pad is None else pad),
        suppress_tokens=tuple(int(t) for t in (pick("suppress_tokens") or ())),
        begin_suppress_tokens=tuple(int(t) for t in (pick("begin_suppress_tokens") or ())),
        no_timestamps_token_id=gen.get("no_timestamps_token_id"),
        is_multilingual=None if gen.get("is_multilingual") is None else bool(gen["is_multilingual"]),
        lang_to_id=tuple(sorted((k, int(v)) for k, v in (gen.get("lang_to_id") or {}).items())),
        task_to_id=tuple(sorted((k, int(v)) for k, v in (gen.get("task_to_id") or {}).items())),
        forced_decoder_ids=tuple((int(i), None if t is None else int(t)) for i, t in pick("forced_decoder_ids") or ()),
    )


# --------------------------------------------------------------------------------------------- weights


def _read_safetensors(file: str) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    try:
        with safe_open(file, framework="numpy") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    except TypeError:
        # numpy has no bfloat16: go through jax (ml_dtypes) for such files
        with safe_open(file, framework="flax") as f:
            for k in f.keys():
                out[k] = np.asarray(f.get_tensor(k))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"cannot read {file}: {e}") from e
    return out


def read_weights(path: str, kind: str = "wav2vec2") -> dict[str, np.ndarray]:
    """``{upstream key: array}`` from the weight files in ``path`` (safetensors preferred)."""
    path = _check_dir(path, kind)
    for name, reader in (("model.safetensors", _read_safetensors), ("pytorch_model.bin", load_torch_state_dict)):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            return reader(file)
        index = file + ".index.json"
        if os.path.isfile(index):
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            out = {}
            for shard in shards:
                shard_file = os.path.join(path, shard)
                if not os.path.isfile(shard_file):
                    raise CheckpointError(f"{index} lists shard {shard} which is missing from {path}")
                out.update(reader(shard_file))
            return out
    raise CheckpointError(
        f"{path} has no weights (model.safetensors, pytorch_model.bin or a sharded index); {_fetch_advice(kind)}"
    )


# ---------------------------------------------------------------------------------------------- filling

# A plan entry: (our parameter path, upstream key without prefix, layout)
Plan = list[tuple[tuple, str, str]]

_TO_OURS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": lambda a: a,
    "linear": lambda a: a.T,
    "conv": lambda a: a.transpose(2, 1, 0),
}
_TO_UPSTREAM_SHAPE: dict[str, Callable[[tuple], tuple]] = {
    "copy": lambda s: s,
    "linear": lambda s: s[::-1],
    "conv": lambda s: (s[2], s[1], s[0]),
}


def _find_prefix(weights: dict, marker: str, path: str, kind: str) -> str:
    """The prefix in front of ``marker`` (e.g. ``"wav2vec2."``), from the keys that end with it."""
    hits = [k[: -len(marker)] for k in weights if k.endswith(marker)]
    if not hits:
        raise CheckpointError(
            f"{path}: tensor {marker!r} is missing (not a {kind} checkpoint, or an incomplete one); "
            f"{len(weights)} tensors present"
        )
    return min(hits, key=len)


def _variable(model: nnx.Module, path: tuple) -> nnx.Variable:
    node = model
    for p in path:
        node = node[p] if isinstance(p, int) else getattr(node, p)
    return node


def _tensor(weights: dict, key: str, path: str) -> np.ndarray:
    if key not in weights:
        raise CheckpointError(f"{path}: tensor {key!r} is missing from the checkpoint")
    return np.asarray(weights[key])


def _check_shape(key: str, got: tuple, expected: tuple, path: str) -> None:
    if tuple(got) != tuple(expected):
        raise CheckpointError(f"{path}: tensor {key!r} has shape {tuple(got)}, expected {tuple(expected)}")


def _fill(model: nnx.Module, weights: dict, plan: Plan, prefix: str, path: str, dtype) -> None:
    for target, key, layout in plan:
        var = _variable(model, target)
        full = prefix + key
        array = _tensor(weights, full, path)
        _check_shape(full, array.shape, _TO_UPSTREAM_SHAPE[layout](tuple(var.shape)), path)
        var.set_value(jnp.asarray(_TO_OURS[layout](array.astype(np.float32)), dtype))


def _assert_filled(model: nnx.Module) -> None:
    for p, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if not hasattr(var.get_value(), "devices"):
            raise AssertionError(f"converter bug: parameter {'/'.join(map(str, p))} was not loaded")


def _linear(target: tuple, key: str, bias: bool = True) -> Plan:
    plan = [((*target, "kernel"), f"{key}.weight", "linear")]
    if bias:
        plan.append(((*target, "bias"), f"{key}.bias", "copy"))
    return plan


def _norm(target: tuple, key: str) -> Plan:
    return [((*target, "scale"), f"{key}.weight", "copy"), ((*target, "bias"), f"{key}.bias", "copy")]


def _attention(target: tuple, key: str, k_bias: bool = True) -> Plan:
    plan = []
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        plan += _linear((*target, name), f"{key}.{name}", bias=k_bias or name != "k_proj")
    return plan


# ------------------------------------------------------------------------------------------- wav2vec2


def wav2vec2_plan(spec: Wav2Vec2Spec) -> Plan:
    """Every parameter except the weight-normed positional conv kernel (handled apart)."""
    plan: Plan = []
    for i in range(len(spec.conv_dim)):
        src = f"feature_extractor.conv_layers.{i}"
        plan.append((("feature_extractor", "convs", i, "kernel"), f"{src}.conv.weight", "conv"))
        if spec.conv_bias:
            plan.append((("feature_extractor", "convs", i, "bias"), f"{src}.conv.bias", "copy"))
        if spec.feat_extract_norm == "layer" or i == 0:
            plan += _norm(("feature_extractor", "norms", i), f"{src}.layer_norm")
    if spec.feat_proj_layer_norm:
        plan += _norm(("projection_norm",), "feature_projection.layer_norm")
    plan += _linear(("projection",), "feature_projection.projection")
    plan.append((("pos_conv", "conv", "bias"), "encoder.pos_conv_embed.conv.bias", "copy"))
    plan += _norm(("encoder_norm",), "encoder.layer_norm")
    for i in range(spec.num_layers):
        src, dst = f"encoder.layers.{i}", ("layers", i)
        plan += _attention((*dst, "attention"), f"{src}.attention")
        plan += _norm((*dst, "layer_norm"), f"{src}.layer_norm")
        plan += _linear((*dst, "feed_forward", "intermediate_dense"), f"{src}.feed_forward.intermediate_dense")
        plan += _linear((*dst, "feed_forward", "output_dense"), f"{src}.feed_forward.output_dense")
        plan += _norm((*dst, "final_layer_norm"), f"{src}.final_layer_norm")
    return plan


def _positional_kernel(weights: dict, prefix: str, spec: Wav2Vec2Spec, path: str) -> np.ndarray:
    """The positional conv weight ``(D, D/groups, K)`` from whichever upstream layout is present.

    Weight norm with ``dim=2``: ``w = g * v / ||v||``, the norm taken per kernel tap over (out, in).
    """
    base = prefix + "encoder.pos_conv_embed.conv."
    d, k = spec.hidden_size, spec.num_conv_pos_embeddings
    expected = (d, d // spec.num_conv_pos_embedding_groups, k)
    layouts = (("weight_g", "weight_v"), ("parametrizations.weight.original0", "parametrizations.weight.original1"))
    for g_name, v_name in layouts:
        if base + g_name in weights or base + v_name in weights:
            g = _tensor(weights, base + g_name, path).astype(np.float32)
            v = _tensor(weights, base + v_name, path).astype(np.float32)
            _check_shape(base + v_name, v.shape, expected, path)
            _check_shape(base + g_name, g.shape, (1, 1, k), path)
            return g * v / np.linalg.norm(v, axis=(0, 1), keepdims=True)
    if base + "weight" in weights:  # already folded (e.g. exported without parametrization)
        w = _tensor(weights, base + "weight", path).astype(np.float32)
        _check_shape(base + "weight", w.shape, expected, path)
        return w
    raise CheckpointError(
        f"{path}: tensor {base + 'weight_g'!r} / {base + 'weight_v'!r} (or "
        f"{base + 'parametrizations.weight.original0'!r} / ...original1, or {base + 'weight'!r}) is missing"
    )


def load_wav2vec2(path: str, *, dtype=jnp.float32) -> Wav2Vec2Model:
    """A :class:`Wav2Vec2Model` (wav2vec2 or HuBERT encoder) with the weights of the directory ``path``."""
    config = read_config(path, "wav2vec2")
    if config.model_type not in ("wav2vec2", "hubert"):
        raise CheckpointError(f"{path} holds a {config.model_type!r} model, not wav2vec2 / hubert")
    spec = wav2vec2_spec(config)
    weights = read_weights(path, config.model_type)
    prefix = _find_prefix(weights, "feature_projection.projection.weight", path, config.model_type)
    model = nnx.eval_shape(lambda: Wav2Vec2Model(spec, rngs=nnx.Rngs(0)))
    _fill(model, weights, wav2vec2_plan(spec), prefix, path, dtype)
    kernel = _positional_kernel(weights, prefix, spec, path)
    model.pos_conv.conv.kernel.set_value(jnp.asarray(kernel.transpose(2, 1, 0), dtype))
    _assert_filled(model)
    return model


# -------------------------------------------------------------------------------------------- whisper


def whisper_plan(spec: WhisperSpec) -> Plan:
    plan: Plan = []
    for conv in ("conv1", "conv2"):
        plan.append((("encoder", conv, "kernel"), f"encoder.{conv}.weight", "conv"))
        plan.append((("encoder", conv, "bias"), f"encoder.{conv}.bias", "copy"))
    plan.append((("encoder", "embed_positions"), "encoder.embed_positions.weight", "copy"))
    for i in range(spec.encoder_layers):
        src, dst = f"encoder.layers.{i}", ("encoder", "layers", i)
        plan += _attention((*dst, "self_attn"), f"{src}.self_attn", k_bias=False)
        plan += _norm((*dst, "self_attn_layer_norm"), f"{src}.self_attn_layer_norm")
        plan += _linear((*dst, "mlp", "fc1"), f"{src}.fc1")
        plan += _linear((*dst, "mlp", "fc2"), f"{src}.fc2")
        plan += _norm((*dst, "final_layer_norm"), f"{src}.final_layer_norm")
    plan += _norm(("encoder", "layer_norm"), "encoder.layer_norm")
    plan.append((("decoder", "embed_tokens", "embedding"), "decoder.embed_tokens.weight", "copy"))
    plan.append((("decoder", "embed_positions"), "decoder.embed_positions.weight", "copy"))
    for i in range(spec.decoder_layers):
        src, dst = f"decoder.layers.{i}", ("decoder", "layers", i)
        plan += _attention((*dst, "self_attn"), f"{src}.self_attn", k_bias=False)
        plan += _norm((*dst, "self_attn_layer_norm"), f"{src}.self_attn_layer_norm")
        plan += _attention((*dst, "encoder_attn"), f"{src}.encoder_attn", k_bias=False)
        plan += _norm((*dst, "encoder_attn_layer_norm"), f"{src}.encoder_attn_layer_norm")
        plan += _linear((*dst, "mlp", "fc1"), f"{src}.fc1")
        plan += _linear((*dst, "mlp", "fc2"), f"{src}.fc2")
        plan += _norm((*dst, "final_layer_norm"), f"{src}.final_layer_norm")
    plan += _norm(("decoder", "layer_norm"), "decoder.layer_norm")
    return plan


def load_whisper(path: str, *, dtype=jnp.float32) -> WhisperModel:
    """A :class:`WhisperModel` (encoder, decoder, tied output) with the weights of the directory ``path``."""
    config = read_config(path, "whisper")
    if config.model_type != "whisper":
        raise CheckpointError(f"{path} holds a {config.model_type!r} model, not whisper")
    spec = whisper_spec(config)
    settings = generation_settings(path, config)
    weights = read_weights(path, "whisper")
    prefix = _find_prefix(weights, "encoder.conv1.weight", path, "whisper")
    model = nnx.eval_shape(lambda: WhisperModel(spec, rngs=nnx.Rngs(0), generation=settings))
    _fill(model, weights, whisper_plan(spec), prefix, path, dtype)
    for key in ("proj_out.weight", prefix + "proj_out.weight"):
        if key in weights and not np.array_equal(weights[key], weights[prefix + "decoder.embed_tokens.weight"]):
            raise CheckpointError(f"{path}: {key!r} differs from the token embedding; untied outputs are unsupported")
    _assert_filled(model)
    return model


def load(path: str, *, dtype=jnp.float32) -> Wav2Vec2Model | WhisperModel:
    """Whichever supported model the directory holds (dispatch on ``config.json``'s ``model_type``)."""
    config = read_config(path, "wav2vec2")
    if config.model_type == "whisper":
        return load_whisper(path, dtype=dtype)
    return load_wav2vec2(path, dtype=dtype)
