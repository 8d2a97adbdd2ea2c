"""The published Wan2.1 configurations (text-to-video), written down from the diffusers configs.

``WAN21_T2V_1_3B`` / ``WAN21_T2V_14B`` are ``Wan-AI/Wan2.1-T2V-{1.3B,14B}-Diffusers``'s
``transformer/config.json``: patch (1, 2, 2), 16 latent channels in and out, umT5-XXL text states of
4096, 256 timestep frequencies, 3-D RoPE over 1024 positions per axis.

=========  ======  =====  ========  ========  ======  ===========================
config     layers  heads  head dim  model D   FFN     parameters (diffusers class)
=========  ======  =====  ========  ========  ======  ===========================
1.3B       30      12     128       1536      8960    1,418,996,800
14B        40      40     128       5120      13824   14,288,491,584
=========  ======  =====  ========  ========  ======  ===========================

The counts are what diffusers' ``WanTransformer3DModel`` has for these configs (built on torch's meta
device by ``tests/golden/make_golden_teacher.py``, recorded in ``tests/golden/data/wan_param_counts``);
``jax.eval_shape`` of our port gives the same numbers (test). The video VAE (``AutoencoderKLWan``,
base 96, z 16, multipliers (1, 2, 4, 4), temporal downsampling (False, True, True)) has 126,892,531.
"""

from __future__ import annotations

import dataclasses

from avatar_jax.teacher.dit import WanDiTSpec

WAN21_T2V_1_3B = WanDiTSpec(patch_size=(1, 2, 2), num_heads=12, head_dim=128, in_channels=16, out_channels=16,
                            text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                            eps=1e-6, rope_max_seq_len=1024)
WAN21_T2V_14B = WanDiTSpec(patch_size=(1, 2, 2), num_heads=40, head_dim=128, in_channels=16, out_channels=16,
                           text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
                           eps=1e-6, rope_max_seq_len=1024)

DIT_CONFIGS = {"1.3B": WAN21_T2V_1_3B, "14B": WAN21_T2V_14B}
PUBLISHED_PARAM_COUNTS = {"1.3B": 1_418_996_800, "14B": 14_288_491_584}
VAE_PARAM_COUNT = 126_892_531


def dit_config(name: str, **options) -> WanDiTSpec:
    """``"1.3B"`` or ``"14B"`` with options (``dtype``, ``param_dtype``, ``remat``) replaced."""
    from avatar_jax.errors import ConfigError

    if name not in DIT_CONFIGS:
        raise ConfigError(f"unknown Wan2.1 config {name!r}; known: {sorted(DIT_CONFIGS)}")
    return dataclasses.replace(DIT_CONFIGS[name], **options)
