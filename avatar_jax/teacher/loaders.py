"""Upstream config -> our spec, and weight plans, for each teacher component; ``load_*`` entry points.

``load_wan_dit(path)`` reads a diffusers ``WanTransformer3DModel`` folder (``transformer/``),
``load_wan_vae(path)`` an ``AutoencoderKLWan`` folder (``vae/``), ``load_umt5(path)`` a transformers
``UMT5EncoderModel`` folder (``text_encoder/``). Unsupported variants (Wan2.1 image-to-video
cross-attention, Wan2.2 residual VAE...) are refused by name rather than loaded wrongly.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from flax import nnx

from avatar_jax.teacher import checkpoint as ck
from avatar_jax.teacher.dit import WanDiT, WanDiTSpec
from avatar_jax.teacher.umt5 import UMT5Encoder, UMT5Spec
from avatar_jax.teacher.vae import Resample, WanVAE, WanVAESpec

# ------------------------------------------------------------------------------------------------ DiT


def wan_dit_spec(config: dict, **options) -> WanDiTSpec:
    """Our :class:`WanDiTSpec` from a diffusers ``WanTransformer3DModel`` config dict (+ dtype/remat options)."""
    for key in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len"):
        if config.get(key) is not None:
            raise ck.TeacherWeightsError(
                f"WanTransformer3DModel with {key}={config[key]} (image-to-video conditioning) is not supported; "
                f"use a text-to-video checkpoint")
    if config.get("qk_norm", "rms_norm_across_heads") != "rms_norm_across_heads":
        raise ck.TeacherWeightsError(f"qk_norm={config['qk_norm']!r} is not supported (rms_norm_across_heads only)")
    return WanDiTSpec(
        patch_size=tuple(config.get("patch_size", (1, 2, 2))),
        num_heads=int(config.get("num_attention_heads", 40)),
        head_dim=int(config.get("attention_head_dim", 128)),
        in_channels=int(config.get("in_channels", 16)),
        out_channels=int(config.get("out_channels") or config.get("in_channels", 16)),
        text_dim=int(config.get("text_dim", 4096)),
        freq_dim=int(config.get("freq_dim", 256)),
        ffn_dim=int(config.get("ffn_dim", 13824)),
        num_layers=int(config.get("num_layers", 40)),
        cross_attn_norm=bool(config.get("cross_attn_norm", True)),
        eps=float(config.get("eps", 1e-6)),
        rope_max_seq_len=int(config.get("rope_max_seq_len", 1024)),
        **options,
    )


def _patch_kernel(a):
    # Conv3d (D, C, pt, ph, pw) -> dense (pt*ph*pw*C, D), patch features in (pt, ph, pw, C) order
    return a.transpose(2, 3, 4, 1, 0).reshape(-1, a.shape[0])


def wan_dit_plan(spec: WanDiTSpec) -> ck.Plan:
    plan: ck.Plan = [(("patch_embedding", "kernel"), "patch_embedding.weight", _patch_kernel),
                     (("patch_embedding", "bias"), "patch_embedding.bias", ck.copy)]
    ce = "condition_embedder"
    plan += ck.linear((ce, "time_1"), f"{ce}.time_embedder.linear_1")
    plan += ck.linear((ce, "time_2"), f"{ce}.time_embedder.linear_2")
    plan += ck.linear((ce, "time_proj"), f"{ce}.time_proj")
    plan += ck.linear((ce, "text_1"), f"{ce}.text_embedder.linear_1")
    plan += ck.linear((ce, "text_2"), f"{ce}.text_embedder.linear_2")
    for i in range(spec.num_layers):
        src, dst = f"blocks.{i}", ("blocks", i)
        for attn in ("attn1", "attn2"):
            for name in ("to_q", "to_k", "to_v"):
                plan += ck.linear((*dst, attn, name), f"{src}.{attn}.{name}")
            plan += ck.linear((*dst, attn, "to_out"), f"{src}.{attn}.to_out.0")
            plan.append(((*dst, attn, "norm_q", "scale"), f"{src}.{attn}.norm_q.weight", ck.copy))
            plan.append(((*dst, attn, "norm_k", "scale"), f"{src}.{attn}.norm_k.weight", ck.copy))
        if spec.cross_attn_norm:
            plan.append(((*dst, "norm2", "scale"), f"{src}.norm2.weight", ck.copy))
            plan.append(((*dst, "norm2", "bias"), f"{src}.norm2.bias", ck.copy))
        plan += ck.linear((*dst, "ffn", "proj_in"), f"{src}.ffn.net.0.proj")
        plan += ck.linear((*dst, "ffn", "proj_out"), f"{src}.ffn.net.2")
        plan.append(((*dst, "scale_shift_table"), f"{src}.scale_shift_table", ck.copy))
    plan += ck.linear(("proj_out",), "proj_out")
    plan.append((("scale_shift_table",), "scale_shift_table", ck.copy))
    return plan


def load_wan_dit(path: str, *, mesh=None, **options) -> WanDiT:
    """A :class:`WanDiT` with the weights of the diffusers folder ``path`` (``TEACHER_DIR/transformer``).

    ``options``: :class:`WanDiTSpec` fields such as ``dtype="bfloat16"``, ``param_dtype``, ``remat="full"``.
    ``mesh``: place every parameter directly with its sharding (e.g. FSDP x tensor-parallel for 14B).
    """
    config = ck.read_config(path, "transformer")
    if config.get("_class_name", "WanTransformer3DModel") != "WanTransformer3DModel":
        raise ck.TeacherWeightsError(f"{path} holds a {config['_class_name']}, not a WanTransformer3DModel")
    spec = wan_dit_spec(config, **options)
    weights = ck.read_weights(path, "transformer")
    for key in [k for k in weights if "norm_added_q" in k]:  # ignored upstream too
        del weights[key]
    model = nnx.eval_shape(lambda: WanDiT(spec, rngs=nnx.Rngs(0)))
    # each parameter keeps its declared dtype: param_dtype, except the time path and the modulation
    # tables, which stay float32 (upstream keeps them fp32)
    ck.fill(model, weights, wan_dit_plan(spec), os.fspath(path), mesh=mesh)
    return model


# ------------------------------------------------------------------------------------------------ VAE


def wan_vae_spec(config: dict, **options) -> WanVAESpec:
    """Our :class:`WanVAESpec` from a diffusers ``AutoencoderKLWan`` config dict."""
    if config.get("is_residual", False) or config.get("patch_size") is not None:
        raise ck.TeacherWeightsError("the Wan2.2 VAE (is_residual / patch_size) is not supported; use the Wan2.1 VAE")
    if config.get("attn_scales"):
        raise ck.TeacherWeightsError(f"attn_scales={config['attn_scales']} is not supported (Wan2.1 uses [])")
    if config.get("decoder_base_dim") not in (None, config.get("base_dim", 96)):
        raise ck.TeacherWeightsError("a decoder_base_dim different from base_dim is not supported")
    return WanVAESpec(
        base_dim=int(config.get("base_dim", 96)),
        z_dim=int(config.get("z_dim", 16)),
        dim_mult=tuple(config.get("dim_mult", (1, 2, 4, 4))),
        num_res_blocks=int(config.get("num_res_blocks", 2)),
        temperal_downsample=tuple(bool(b) for b in config.get("temperal_downsample", (False, True, True))),
        in_channels=int(config.get("in_channels", 3)),
        out_channels=int(config.get("out_channels", 3)),
        latents_mean=tuple(float(v) for v in config.get("latents_mean") or ()),
        latents_std=tuple(float(v) for v in config.get("latents_std") or ()),
        **options,
    )


def _conv3(target: tuple, key: str) -> ck.Plan:
    return [((*target, "kernel"), f"{key}.weight", ck.conv3d_t), ((*target, "bias"), f"{key}.bias", ck.copy)]


def _conv2(target: tuple, key: str) -> ck.Plan:
    return [((*target, "kernel"), f"{key}.weight", ck.conv2d_t), ((*target, "bias"), f"{key}.bias", ck.copy)]


def _gamma(target: tuple, key: str) -> ck.Plan:
    return [((*target, "gamma"), f"{key}.gamma", ck.squeeze)]


def _resblock(block, target: tuple, key: str) -> ck.Plan:
    plan = _gamma((*target, "norm1"), f"{key}.norm1") + _conv3((*target, "conv1"), f"{key}.conv1")
    plan += _gamma((*target, "norm2"), f"{key}.norm2") + _conv3((*target, "conv2"), f"{key}.conv2")
    if block.conv_shortcut is not None:
        plan += _conv3((*target, "conv_shortcut"), f"{key}.conv_shortcut")
    return plan


def _resample(block: Resample, target: tuple, key: str) -> ck.Plan:
    plan = _conv2((*target, "conv"), f"{key}.resample.1")
    if block.time_conv is not None:
        plan += _conv3((*target, "time_conv"), f"{key}.time_conv")
    return plan


def _mid(block, target: tuple, key: str) -> ck.Plan:
    plan = []
    for j, resnet in enumerate(block.resnets):
        plan += _resblock(resnet, (*target, "resnets", j), f"{key}.resnets.{j}")
    a, ak = (*target, "attention"), f"{key}.attentions.0"
    plan += _gamma((*a, "norm"), f"{ak}.norm") + _conv2((*a, "to_qkv"), f"{ak}.to_qkv") + _conv2((*a, "proj"),
                                                                                               f"{ak}.proj")
    return plan


def wan_vae_plan(model: WanVAE) -> ck.Plan:
    enc, dec = model.encoder, model.decoder
    plan = _conv3(("encoder", "conv_in"), "encoder.conv_in")
    for j, block in enumerate(enc.down_blocks):
        target, key = ("encoder", "down_blocks", j), f"encoder.down_blocks.{j}"
        plan += _resample(block, target, key) if isinstance(block, Resample) else _resblock(block, target, key)
    plan += _mid(enc.mid_block, ("encoder", "mid_block"), "encoder.mid_block")
    plan += _gamma(("encoder", "norm_out"), "encoder.norm_out") + _conv3(("encoder", "conv_out"), "encoder.conv_out")
    plan += _conv3(("quant_conv",), "quant_conv") + _conv3(("post_quant_conv",), "post_quant_conv")
    plan += _conv3(("decoder", "conv_in"), "decoder.conv_in")
    plan += _mid(dec.mid_block, ("decoder", "mid_block"), "decoder.mid_block")
    for i, block in enumerate(dec.up_blocks):
        target, key = ("decoder", "up_blocks", i), f"decoder.up_blocks.{i}"
        for j, resnet in enumerate(block.resnets):
            plan += _resblock(resnet, (*target, "resnets", j), f"{key}.resnets.{j}")
        if block.upsampler is not None:
            plan += _resample(block.upsampler, (*target, "upsampler"), f"{key}.upsamplers.0")
    plan += _gamma(("decoder", "norm_out"), "decoder.norm_out") + _conv3(("decoder", "conv_out"), "decoder.conv_out")
    return plan


def load_wan_vae(path: str, **options) -> WanVAE:
    """A :class:`WanVAE` with the weights of the diffusers folder ``path`` (``TEACHER_DIR/vae``).

    ``options``: :class:`WanVAESpec` fields such as ``dtype="bfloat16"``.
    """
    config = ck.read_config(path, "vae")
    if config.get("_class_name", "AutoencoderKLWan") != "AutoencoderKLWan":
        raise ck.TeacherWeightsError(f"{path} holds a {config['_class_name']}, not an AutoencoderKLWan")
    spec = wan_vae_spec(config, **options)
    weights = ck.read_weights(path, "vae")
    model = nnx.eval_shape(lambda: WanVAE(spec, rngs=nnx.Rngs(0)))
    ck.fill(model, weights, wan_vae_plan(model), os.fspath(path))
    return model


# ----------------------------------------------------------------------------------------------- umT5


def umt5_spec(config: dict, **options) -> UMT5Spec:
    """Our :class:`UMT5Spec` from a transformers ``UMT5Config`` dict."""
    if config.get("model_type") not in (None, "umt5"):
        raise ck.TeacherWeightsError(f"text encoder model_type={config['model_type']!r} is not umt5")
    proj = config.get("feed_forward_proj", "gated-gelu")
    gated = proj.startswith("gated-")
    act = config.get("dense_act_fn") or proj.split("-")[-1]
    if act == "gelu" and gated:
        act = "gelu_new"  # transformers maps "gated-gelu" to gelu_new
    return UMT5Spec(
        vocab_size=int(config["vocab_size"]), d_model=int(config["d_model"]), d_kv=int(config["d_kv"]),
        d_ff=int(config["d_ff"]), num_layers=int(config["num_layers"]), num_heads=int(config["num_heads"]),
        relative_attention_num_buckets=int(config.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(config.get("relative_attention_max_distance", 128)),
        dense_act_fn=act, is_gated_act=gated, layer_norm_epsilon=float(config.get("layer_norm_epsilon", 1e-6)),
        **options,
    )


def umt5_plan(spec: UMT5Spec, embed_key: str) -> ck.Plan:
    plan: ck.Plan = [(("embed_tokens", "embedding"), embed_key, ck.copy)]
    for i in range(spec.num_layers):
        src, dst = f"encoder.block.{i}.layer", ("blocks", i)
        for name in ("q", "k", "v", "o"):
            plan += ck.linear((*dst, "attention", name), f"{src}.0.SelfAttention.{name}", bias=False)
        plan.append(((*dst, "attention", "relative_attention_bias"),
                     f"{src}.0.SelfAttention.relative_attention_bias.weight", ck.copy))
        plan.append(((*dst, "attn_norm", "scale"), f"{src}.0.layer_norm.weight", ck.copy))
        plan += ck.linear((*dst, "ff", "wi_0"), f"{src}.1.DenseReluDense.{'wi_0' if spec.is_gated_act else 'wi'}",
                          bias=False)
        if spec.is_gated_act:
            plan += ck.linear((*dst, "ff", "wi_1"), f"{src}.1.DenseReluDense.wi_1", bias=False)
        plan += ck.linear((*dst, "ff", "wo"), f"{src}.1.DenseReluDense.wo", bias=False)
        plan.append(((*dst, "ff_norm", "scale"), f"{src}.1.layer_norm.weight", ck.copy))
    plan.append((("final_layer_norm", "scale"), "encoder.final_layer_norm.weight", ck.copy))
    return plan


def load_umt5(path: str, **options) -> UMT5Encoder:
    """A :class:`UMT5Encoder` with the weights of the transformers folder ``path`` (``TEACHER_DIR/text_encoder``)."""
    config = ck.read_config(path, "text_encoder")
    spec = umt5_spec(config, **options)
    weights = ck.read_weights(path, "text_encoder")
    embed_key = "shared.weight" if "shared.weight" in weights else "encoder.embed_tokens.weight"
    if embed_key == "shared.weight":
        weights.pop("encoder.embed_tokens.weight", None)  # tied copy
    model = nnx.eval_shape(lambda: UMT5Encoder(spec, rngs=nnx.Rngs(0)))
    ck.fill(model, weights, umt5_plan(spec, embed_key), os.fspath(path))
    return model


# ------------------------------------------------------------------------------------------- pipeline


class TeacherWeights(NamedTuple):
    dit: WanDiT
    vae: WanVAE
    text_encoder: UMT5Encoder | None


def load_teacher(root: str, *, text_encoder: bool = False, dit_options: dict | None = None,
                 vae_options: dict | None = None) -> TeacherWeights:
    """The DiT, the VAE and (``text_encoder=True``) umT5 from a diffusers Wan2.1 pipeline folder ``root``.

    Checks that every needed component is present before loading anything; a missing one raises
    :class:`~avatar_jax.teacher.checkpoint.TeacherWeightsError` naming the expected layout.
    """
    root = os.fspath(root)
    needed = ["transformer", "vae"] + (["text_encoder"] if text_encoder else [])
    missing = []
    for name in needed:
        folder = os.path.join(root, name)
        has_weights = os.path.isdir(folder) and any(
            os.path.isfile(os.path.join(folder, w)) or os.path.isfile(os.path.join(folder, w + ".index.json"))
            for w in ck.WEIGHT_NAMES)
        if not (has_weights and os.path.isfile(os.path.join(folder, "config.json"))):
            missing.append(f"{name}/")
    if missing:
        raise ck.TeacherWeightsError(
            f"teacher weights not found in {root!r}: missing {', '.join(missing)} (config.json + safetensors); "
            f"expected layout:\n{ck.TEACHER_LAYOUT}\n{ck.FETCH_HINT}")
    return TeacherWeights(
        dit=load_wan_dit(os.path.join(root, "transformer"), **(dit_options or {})),
        vae=load_wan_vae(os.path.join(root, "vae"), **(vae_options or {})),
        text_encoder=load_umt5(os.path.join(root, "text_encoder")) if text_encoder else None,
    )
