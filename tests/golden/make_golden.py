"""Write golden files: tiny upstream PyTorch modules, their inputs and their outputs.

Runs ONLY in the separate Python 3.11 venv that `make golden` builds (torch, transformers,
diffusers). Every producer below creates a tiny randomly initialised upstream model with a fixed
seed, saves it in its upstream on-disk format (safetensors or a transformers directory), and saves
inputs and outputs as .npz. The files are small and committed; our tests load them with our own
converters and never import torch.

Add a producer with @producer("name"); run a subset with --only name1,name2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

PRODUCERS = {}


def producer(name):
    def register(fn):
        PRODUCERS[name] = fn
        return fn

    return register


def save_npz(path, **arrays):
    np.savez(path, **{k: np.asarray(v.detach().cpu().numpy() if torch.is_tensor(v) else v) for k, v in arrays.items()})


@producer("mlp")
def make_mlp(out_dir):
    """A tiny torch MLP (Linear -> LayerNorm -> GELU(tanh) -> Linear) as a safetensors state dict."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.LayerNorm(16), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(16, 4)
    ).eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        y = model(x)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out_dir, "mlp.safetensors"))
    save_npz(os.path.join(out_dir, "mlp_io.npz"), x=x, y=y)


def _scramble(model, std=0.3, seed=0):
    """Redraw trainable parameters with a larger spread than the upstream init (std 0.02), so that
    attention is far from uniform and greedy tokens vary: a wrong detail then shows up as a large error."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if not p.requires_grad:
                continue
            noise = torch.randn(p.shape, generator=g)
            if p.ndim >= 2:
                p.copy_(std * noise)
            else:
                p.add_(0.1 * noise)


def _tiny_wav2vec2_config(stable):
    """A few-KB wav2vec2: 3 convs (receptive field 30 samples, hop 20), 2 layers, hidden 32."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        conv_dim=(16, 16, 16),
        conv_kernel=(10, 3, 2),
        conv_stride=(5, 2, 2),
        conv_bias=stable,
        num_conv_pos_embeddings=8,  # even: exercises the "drop last frame" same-padding rule
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer" if stable else "group",
        do_stable_layer_norm=stable,
        vocab_size=12,
    )


def _wav2vec2_io(model, out_dir, base):
    """Fixed input audio (2, 400) and every hidden state of the encoder."""
    g = torch.Generator().manual_seed(1)
    audio = 0.3 * torch.randn(2, 400, generator=g)
    with torch.no_grad():
        out = base(audio, output_hidden_states=True)
    arrays = {"input_values": audio, "last_hidden_state": out.last_hidden_state}
    if getattr(out, "extract_features", None) is not None:
        arrays["extract_features"] = out.extract_features
    for i, h in enumerate(out.hidden_states):
        arrays[f"hidden_state_{i}"] = h
    save_npz(os.path.join(out_dir, "io.npz"), **arrays)


@producer("wav2vec2_group")
def make_wav2vec2_group(out_dir):
    """Wav2Vec2Model, do_stable_layer_norm=False (group-norm extractor, post-LN), safetensors."""
    from transformers import Wav2Vec2Model

    torch.manual_seed(0)
    model = Wav2Vec2Model(_tiny_wav2vec2_config(stable=False)).eval()
    _scramble(model)
    model.save_pretrained(out_dir)
    _wav2vec2_io(model, out_dir, model)


@producer("wav2vec2_stable")
def make_wav2vec2_stable(out_dir):
    """Wav2Vec2Model, do_stable_layer_norm=True (layer-norm extractor, pre-LN), safetensors."""
    from transformers import Wav2Vec2Model

    torch.manual_seed(0)
    model = Wav2Vec2Model(_tiny_wav2vec2_config(stable=True)).eval()
    _scramble(model)
    model.save_pretrained(out_dir)
    _wav2vec2_io(model, out_dir, model)


@producer("wav2vec2_ctc_bin")
def make_wav2vec2_ctc_bin(out_dir):
    """Wav2Vec2ForCTC (stable LN) as an old-style hub repo: pytorch_model.bin, keys under "wav2vec2.",
    positional conv weight norm stored as weight_g / weight_v (pre-parametrization layout)."""
    from transformers import Wav2Vec2ForCTC

    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(_tiny_wav2vec2_config(stable=True)).eval()
    _scramble(model, seed=3)
    model.save_pretrained(out_dir)
    os.remove(os.path.join(out_dir, "model.safetensors"))
    state = {}
    for k, v in model.state_dict().items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        k = k.replace("parametrizations.weight.original1", "weight_v")
        state[k] = v.clone()
    torch.save(state, os.path.join(out_dir, "pytorch_model.bin"))
    _wav2vec2_io(model, out_dir, model.wav2vec2)


@producer("hubert")
def make_hubert(out_dir):
    """HubertModel (shares wav2vec2's layout) with feat_proj_layer_norm=False, safetensors."""
    from transformers import HubertConfig, HubertModel

    fields = _tiny_wav2vec2_config(stable=False).to_dict()
    keep = {k: fields[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                   "conv_dim", "conv_kernel", "conv_stride", "conv_bias", "num_conv_pos_embeddings",
                                   "num_conv_pos_embedding_groups", "feat_extract_norm", "do_stable_layer_norm")}
    torch.manual_seed(0)
    model = HubertModel(HubertConfig(**keep, feat_proj_layer_norm=False)).eval()
    _scramble(model, seed=5)
    model.save_pretrained(out_dir)
    _wav2vec2_io(model, out_dir, model)


WHISPER_PROMPT = [1, 10, 11]  # decoder start + two forced tokens for the manual greedy reference


@producer("whisper")
def make_whisper(out_dir):
    """Tiny WhisperForConditionalGeneration (8 mel bins, 32 frames, d_model 32, 2+2 layers, vocab 96).

    Saves encoder/decoder hidden states and logits for fixed inputs, `generate` greedy tokens, and a
    manual full-recompute greedy loop from a 3-token prompt (same suppression rules).
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=96,
        num_mel_bins=8,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_source_positions=16,
        max_target_positions=24,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        suppress_tokens=[5, 7],
        begin_suppress_tokens=[2, 3],
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    _scramble(model)
    model.save_pretrained(out_dir)
    g = torch.Generator().manual_seed(2)
    features = torch.randn(2, 8, 32, generator=g)
    decoder_ids = torch.tensor([[1, 4, 9, 20, 33], [1, 50, 60, 70, 80]])
    with torch.no_grad():
        out = model(input_features=features, decoder_input_ids=decoder_ids, output_hidden_states=True)
        generated = model.generate(features, do_sample=False, max_new_tokens=8)
        # the same with token 63 as end of text: one row stops early, exercising stop + padding
        generated_eos = model.generate(features, do_sample=False, max_new_tokens=8, eos_token_id=63)
        # manual greedy: full recompute, suppress_tokens always, begin_suppress at the first new token
        seq = torch.tensor([WHISPER_PROMPT] * 2)
        enc = model.model.encoder(features).last_hidden_state
        for step in range(8):
            logits = model(encoder_outputs=(enc,), decoder_input_ids=seq).logits[:, -1]
            logits[:, config.suppress_tokens] = -float("inf")
            if step == 0:
                logits[:, config.begin_suppress_tokens] = -float("inf")
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    arrays = {
        "input_features": features,
        "decoder_input_ids": decoder_ids,
        "logits": out.logits,
        "encoder_last_hidden_state": out.encoder_last_hidden_state,
        "generated": generated if torch.is_tensor(generated) else generated["sequences"],
        "generated_eos63": generated_eos if torch.is_tensor(generated_eos) else generated_eos["sequences"],
        "generate_decoder_start": np.asarray([config.decoder_start_token_id]),
        "manual_prompt": np.asarray(WHISPER_PROMPT),
        "manual_greedy": seq,
    }
    for i, h in enumerate(out.encoder_hidden_states):
        arrays[f"encoder_hidden_state_{i}"] = h
    for i, h in enumerate(out.decoder_hidden_states):
        arrays[f"decoder_hidden_state_{i}"] = h
    save_npz(os.path.join(out_dir, "io.npz"), **arrays)


def _save_bin(model, out_dir):
    """Replace model.safetensors by an old-style pytorch_model.bin (torch.save of the full state dict,
    tied proj_out.weight included as a second key on the token table's storage)."""
    os.remove(os.path.join(out_dir, "model.safetensors"))
    torch.save(model.state_dict(), os.path.join(out_dir, "pytorch_model.bin"))


WHISPER_FORCED = [[1, 10], [2, 11]]  # generation_config forced_decoder_ids of the variants below


def _whisper_variant(out_dir, seed, fmt, **overrides):
    """A smaller tiny Whisper (d_model 16, vocab 64, 2+2 layers) with one config setting changed.

    Saves every encoder/decoder hidden state and the logits for fixed inputs, greedy `generate` from
    the start token alone, then greedy `generate` after adding forced_decoder_ids to the generation
    config (saved with it: upstream starts from [start, 10, 11]).
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=64, num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_source_positions=16,
        max_target_positions=24, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        suppress_tokens=[5, 7], begin_suppress_tokens=[2, 3], **overrides,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    _scramble(model, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    features = torch.randn(2, 8, 32, generator=g)
    decoder_ids = torch.tensor([[1, 4, 9, 20, 33], [1, 50, 60, 12, 40]])
    with torch.no_grad():
        out = model(input_features=features, decoder_input_ids=decoder_ids, output_hidden_states=True)
        generated = model.generate(features, do_sample=False, max_new_tokens=8)
        model.generation_config.forced_decoder_ids = WHISPER_FORCED
        forced = model.generate(features, do_sample=False, max_new_tokens=8)
    model.save_pretrained(out_dir)
    if fmt == "bin":
        _save_bin(model, out_dir)
    arrays = {
        "input_features": features,
        "decoder_input_ids": decoder_ids,
        "logits": out.logits,
        "encoder_last_hidden_state": out.encoder_last_hidden_state,
        "generated": generated if torch.is_tensor(generated) else generated["sequences"],
        "generated_forced": forced if torch.is_tensor(forced) else forced["sequences"],
    }
    for i, h in enumerate(out.encoder_hidden_states):
        arrays[f"encoder_hidden_state_{i}"] = h
    for i, h in enumerate(out.decoder_hidden_states):
        arrays[f"decoder_hidden_state_{i}"] = h
    save_npz(os.path.join(out_dir, "io.npz"), **arrays)


@producer("whisper_relu")
def make_whisper_relu(out_dir):
    """activation_function="relu" (feed-forward only: the input convs stay GELU upstream), safetensors."""
    _whisper_variant(out_dir, 13, "safetensors", activation_function="relu")


@producer("whisper_relu_bin")
def make_whisper_relu_bin(out_dir):
    """activation_function="relu", pytorch_model.bin."""
    _whisper_variant(out_dir, 20, "bin", activation_function="relu")


@producer("whisper_scale_embedding")
def make_whisper_scale_embedding(out_dir):
    """scale_embedding=True (computed upstream, never applied), safetensors."""
    _whisper_variant(out_dir, 30, "safetensors", scale_embedding=True)


@producer("whisper_scale_embedding_bin")
def make_whisper_scale_embedding_bin(out_dir):
    """scale_embedding=True, pytorch_model.bin."""
    _whisper_variant(out_dir, 42, "bin", scale_embedding=True)


@producer("wav2vec2_mixed")
def make_wav2vec2_mixed(out_dir):
    """Wav2Vec2Model with the switches upstream keeps independent set apart: layer-norm extractor with
    the post-LN encoder, conv bias, layer_norm_eps 0.1 (projection and encoder LayerNorms only: the
    extractor's norms keep 1e-5), feat_extract_activation relu (convs and positional conv) vs hidden_act
    gelu_new (feed-forward), an odd positional kernel, safetensors."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    fields = _tiny_wav2vec2_config(stable=False).to_dict()
    fields.update(feat_extract_norm="layer", do_stable_layer_norm=False, conv_bias=True, layer_norm_eps=0.1,
                  feat_extract_activation="relu", hidden_act="gelu_new", num_conv_pos_embeddings=7,
                  num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(**fields)).eval()
    _scramble(model, seed=7)
    model.save_pretrained(out_dir)
    _wav2vec2_io(model, out_dir, model)


@producer("hubert_stable")
def make_hubert_stable(out_dir):
    """HubertModel with the pre-LN encoder over a group-norm extractor, projection LayerNorm on,
    layer_norm_eps 0.1, hidden_act relu, as pytorch_model.bin."""
    from transformers import HubertConfig, HubertModel

    fields = _tiny_wav2vec2_config(stable=False).to_dict()
    keep = {k: fields[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                   "conv_dim", "conv_kernel", "conv_stride", "num_conv_pos_embeddings",
                                   "num_conv_pos_embedding_groups")}
    config = HubertConfig(**keep, conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=True,
                          feat_proj_layer_norm=True, layer_norm_eps=0.1, hidden_act="relu")
    torch.manual_seed(0)
    model = HubertModel(config).eval()
    _scramble(model, seed=9)
    model.save_pretrained(out_dir)
    _save_bin(model, out_dir)
    _wav2vec2_io(model, out_dir, model)


@producer("torch_pickle")
def make_torch_pickle(out_dir):
    """A torch.save state dict of awkward tensors (fp16, bf16, int64, bool, a transposed view, a slice
    sharing its storage with another entry, a scalar) and the same values as float64/int64 in an npz."""
    g = torch.Generator().manual_seed(4)
    base = torch.randn(6, 5, generator=g)
    state = {
        "fp32": torch.randn(3, 4, generator=g),
        "fp16": torch.randn(4, generator=g).half(),
        "bf16": torch.randn(2, 3, generator=g).bfloat16(),
        "int64": torch.arange(7) * 3 - 5,
        "bool": torch.tensor([True, False, True]),
        "transposed": base.t(),
        "slice_of_base": base[2:4, 1:],
        "base": base,
        "scalar": torch.tensor(2.5),
    }
    torch.save(state, os.path.join(out_dir, "state.bin"))
    expected = {k: (v.double() if v.is_floating_point() else v.long()) for k, v in state.items()}
    save_npz(os.path.join(out_dir, "expected.npz"), **expected)


from make_golden_teacher import TEACHER_PRODUCERS  # noqa: E402  (Wan2.1 DiT / VAE, umT5: teacher golden files)

PRODUCERS.update(TEACHER_PRODUCERS)
from make_golden_eval import EVAL_PRODUCERS  # noqa: E402  (SyncNet, pytorch-fid InceptionV3: metric golden files)

PRODUCERS.update(EVAL_PRODUCERS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data"))
    parser.add_argument("--only", default="", help="comma-separated producers (default: all)")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(PRODUCERS)
    unknown = set(names) - set(PRODUCERS)
    if unknown:
        sys.exit(f"unknown producers {sorted(unknown)}; known: {sorted(PRODUCERS)}")
    import transformers

    for name in names:
        out_dir = os.path.join(args.out, name)
        os.makedirs(out_dir, exist_ok=True)
        PRODUCERS[name](out_dir)
        with open(os.path.join(out_dir, "VERSIONS.json"), "w") as f:
            json.dump({"torch": torch.__version__, "transformers": transformers.__version__}, f, indent=1)
        print(f"golden: wrote {out_dir}")


if __name__ == "__main__":
    main()
