"""Golden files for the video-diffusion teacher: Wan2.1 DiT, Wan2.1 video VAE, umT5 encoder.

Runs only in the golden venv (torch, diffusers, transformers), through ``make_golden.py``, which
registers :data:`TEACHER_PRODUCERS`. Every producer saves a tiny random upstream model in its on-disk
format (diffusers / transformers ``save_pretrained``), fixed inputs and the upstream outputs
(``io.npz``). ``wan_param_counts`` records the exact parameter counts that diffusers' own model class
gives for the published Wan2.1 1.3B and 14B configs (built on torch's meta device: no memory, no weights).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

TEACHER_PRODUCERS = {}


def _producer(name):
    def register(fn):
        TEACHER_PRODUCERS[name] = fn
        return fn

    return register


def _save_npz(path, **arrays):
    np.savez(path, **{k: np.asarray(v.detach().cpu().numpy() if torch.is_tensor(v) else v) for k, v in arrays.items()})


def _perturb(model, std_1d=0.1, std_nd=None, seed=0):
    """Add noise to 1-D parameters (norm gains, biases: upstream inits them to 1 / 0, which would hide a
    wrong layout) and, with ``std_nd``, redraw matrices with that spread."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim >= 2 and std_nd is not None and p.shape[0] > 1:
                p.copy_(std_nd * noise)
            elif p.ndim == 1 or p.shape[0] == 1 or p.numel() == p.shape[0]:
                p.add_(std_1d * noise)


# The Wan2.1 text-to-video transformer configs, as in Wan-AI/Wan2.1-T2V-{1.3B,14B}-Diffusers
# (transformer/config.json). Mirrored in avatar_jax/teacher/configs.py.
WAN21_DIT = {
    "1.3B": dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                 out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                 qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
    "14B": dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16,
                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
}
WAN21_VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True])


@_producer("wan_param_counts")
def make_wan_param_counts(out_dir):
    """Exact parameter counts of diffusers' classes for the published configs (meta device)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    counts = {}
    with torch.device("meta"):
        for name, cfg in WAN21_DIT.items():
            model = WanTransformer3DModel(**cfg)
            counts[f"dit_{name}"] = sum(p.numel() for p in model.parameters())
        vae = AutoencoderKLWan(**WAN21_VAE)
        counts["vae"] = sum(p.numel() for p in vae.parameters())
    with open(os.path.join(out_dir, "counts.json"), "w") as f:
        json.dump({"counts": counts, "dit_configs": WAN21_DIT, "vae_config": WAN21_VAE}, f, indent=1)


TINY_DIT = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
                text_dim=16, freq_dim=16, ffn_dim=40, num_layers=2, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=32)


@_producer("wan_dit")
def make_wan_dit(out_dir):
    """Tiny WanTransformer3DModel (2 layers, 2 heads of 12), saved sharded (index json + 2 safetensors).

    Inputs: latents (2, 4, 3, 6, 8) (B, C, F, H, W), timesteps (2,), text states (2, 7, 16).
    Outputs: the model output and the input of every block (forward hooks).
    """
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(**TINY_DIT).eval()
    _perturb(model, std_1d=0.1, std_nd=0.25, seed=1)
    model.save_pretrained(out_dir, max_shard_size="20KB", safe_serialization=True)
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(2, 4, 3, 6, 8, generator=g)
    timestep = torch.tensor([999.0, 250.5])
    text = torch.randn(2, 7, 16, generator=g)
    block_inputs = []
    hooks = [b.register_forward_hook(lambda m, a, o: block_inputs.append(o.detach().clone())) for b in model.blocks]
    with torch.no_grad():
        out = model(latents, timestep, text, return_dict=False)[0]
        temb, tproj, text_emb, _ = model.condition_embedder(timestep, text, None)
    for h in hooks:
        h.remove()
    arrays = {"latents": latents, "timestep": timestep, "text": text, "out": out, "temb": temb,
              "timestep_proj": tproj, "text_emb": text_emb}
    for i, b in enumerate(block_inputs):
        arrays[f"block_{i}"] = b
    _save_npz(os.path.join(out_dir, "io.npz"), **arrays)


TINY_VAE = dict(base_dim=4, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
                temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.3, 0.0],
                latents_std=[1.5, 0.8, 1.2, 1.0])


@_producer("wan_vae")
def make_wan_vae(out_dir):
    """Tiny AutoencoderKLWan with the Wan2.1 layout (3 downsamples, 2 temporal), safetensors.

    Video (1, 3, 9, 24, 16) -> moments (1, 8, 3, 3, 2) (mean, logvar); decode of the mean and of a
    random latent (clamped, and unclamped through the same chunk loop as ``_decode``).
    """
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(**TINY_VAE).eval()
    _perturb(vae, std_1d=0.1, seed=3)
    vae.save_pretrained(out_dir, safe_serialization=True)
    g = torch.Generator().manual_seed(4)
    video = torch.rand(1, 3, 9, 24, 16, generator=g) * 2 - 1
    z = torch.randn(1, 4, 3, 3, 2, generator=g)
    with torch.no_grad():
        moments = vae._encode(video)
        decoded = vae.decode(z).sample
        vae.clear_cache()
        x = vae.post_quant_conv(z)
        chunks = []
        for i in range(z.shape[2]):
            vae._conv_idx = [0]
            chunks.append(vae.decoder(x[:, :, i:i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                      first_chunk=i == 0))
        raw = torch.cat(chunks, 2)
        vae.clear_cache()
        recon = vae.decode(moments[:, :4]).sample
    _save_npz(os.path.join(out_dir, "io.npz"), video=video, moments=moments, z=z, decoded=decoded, decoded_raw=raw,
              recon=recon)


@_producer("umt5")
def make_umt5(out_dir):
    """Tiny UMT5EncoderModel (2 layers, d_model 32, 4 heads of 8, gated-gelu FF, 32 buckets), safetensors.

    Token ids (2, 9) with an attention mask (second row padded after 6 tokens); every hidden state.
    """
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16,
                        feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6,
                        tie_word_embeddings=False)
    torch.manual_seed(0)
    model = UMT5EncoderModel(config).eval()
    _perturb(model, std_1d=0.1, std_nd=0.3, seed=5)
    model.save_pretrained(out_dir, safe_serialization=True)
    ids = torch.tensor([[5, 17, 3, 40, 22, 9, 1, 30, 2], [7, 7, 12, 50, 61, 1, 0, 0, 0]])
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    arrays = {"input_ids": ids, "attention_mask": mask, "last_hidden_state": out.last_hidden_state}
    for i, h in enumerate(out.hidden_states):
        arrays[f"hidden_state_{i}"] = h
    _save_npz(os.path.join(out_dir, "io.npz"), **arrays)
