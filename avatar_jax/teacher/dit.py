"""Wan2.1 video diffusion transformer (diffusers ``WanTransformer3DModel``) in Flax NNX.

    latents (B, F, H, W, C) ──► 3-D patch embed (pt, ph, pw) ──► tokens (B, N, D), N = F/pt · H/ph · W/pw
    timestep (B,) ──► sinusoids (freq_dim) ──► MLP ──► temb (B, D) ──► time_proj ──► 6 modulations (B, 6, D)
    text (B, L, text_dim) ──► MLP (gelu-tanh) ──► context (B, L, D)
    tokens ──► num_layers × [ modulated LayerNorm ─ self-attention (3-D RoPE, RMS q/k norm) ─ gated residual
                              LayerNorm ─ cross-attention onto the context ─ residual
                              modulated LayerNorm ─ FFN (gelu-tanh) ─ gated residual ]
           ──► modulated LayerNorm ──► Linear ──► unpatchify ──► (B, F, H, W, C_out)

Layouts are channels-last (``(B, F, H, W, C)``); diffusers uses ``(B, C, F, H, W)``. Weight names and
numerics follow diffusers so that :mod:`avatar_jax.teacher.checkpoint` loads its checkpoints unchanged.
The Wan2.1 text-to-video configs (1.3B, 14B) are in :mod:`avatar_jax.teacher.configs`.

Options: ``dtype`` (compute dtype, e.g. ``"bfloat16"``; norms, modulation and the time path stay in
float32 as upstream keeps them), ``param_dtype``, ``remat`` per block (``"none"``, ``"full"``: recompute
the whole block in the backward pass, ``"dots"``: save only matmul outputs). LoRA on every attention
projection is added with :func:`add_lora`; audio tokens are added to the latent tokens before chosen
blocks (``token_offsets``, see :mod:`avatar_jax.teacher.audio_adapter`).
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.audio.layers import axes
from avatar_jax.errors import ConfigError
from avatar_jax.teacher import rope as rope_lib
from avatar_jax.teacher.layers import LayerNorm, LoRA, RMSNorm, dense, layer_norm

REMAT_POLICIES = {
    "none": None,
    "full": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class WanDiTSpec:
    """Architecture of a Wan2.1 DiT (diffusers config names in comments); defaults are Wan2.1-T2V-1.3B."""

    patch_size: tuple[int, int, int] = (1, 2, 2)  # patch_size
    num_heads: int = 12  # num_attention_heads
    head_dim: int = 128  # attention_head_dim
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 8960
    num_layers: int = 30
    cross_attn_norm: bool = True
    eps: float = 1e-6
    rope_max_seq_len: int = 1024
    rope_theta: float = 10000.0
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat: str = "none"  # none | full | dots

    def __post_init__(self):
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"remat must be one of {sorted(REMAT_POLICIES)}, got {self.remat!r}")
        if len(self.patch_size) != 3:
            raise ConfigError(f"patch_size must have 3 entries (t, h, w), got {self.patch_size}")
        rope_lib.axis_dims(self.head_dim)  # checks that the head splits into even t/h/w parts

    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def patch_volume(self) -> int:
        return math.prod(self.patch_size)


class WanAttention(nnx.Module):
    """Multi-head attention with RMS norm on q and k across heads (``rms_norm_across_heads``).

    Self-attention (``context`` None, 3-D RoPE on q and k) or cross-attention onto ``context (B, L, D)``.
    """

    def __init__(self, spec: WanDiTSpec, *, rngs: nnx.Rngs):
        d, dt, pdt = spec.dim, jnp.dtype(spec.dtype), jnp.dtype(spec.param_dtype)
        self.heads = spec.num_heads
        self.to_q = dense(d, d, "embed", "heads", dtype=dt, param_dtype=pdt, rngs=rngs)
        self.to_k = dense(d, d, "embed", "heads", dtype=dt, param_dtype=pdt, rngs=rngs)
        self.to_v = dense(d, d, "embed", "heads", dtype=dt, param_dtype=pdt, rngs=rngs)
        self.to_out = dense(d, d, "heads", "embed", dtype=dt, param_dtype=pdt, rngs=rngs)
        self.norm_q = RMSNorm(d, spec.eps, "heads", param_dtype=pdt)
        self.norm_k = RMSNorm(d, spec.eps, "heads", param_dtype=pdt)
        self.lora = nnx.data(None)  # nnx.Dict of LoRA modules keyed by projection, set by add_lora

    def _proj(self, name: str, x: jax.Array) -> jax.Array:
        y = getattr(self, name)(x)
        if self.lora is not None and name in self.lora:
            y = y + self.lora[name](x).astype(y.dtype)
        return y

    def __call__(self, x: jax.Array, context: jax.Array | None = None,
                 rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        """``x (B, N, D)`` -> ``(B, N, D)``; ``rope`` = (cos, sin) ``(N, head_dim)``."""
        src = x if context is None else context
        q = self.norm_q(self._proj("to_q", x))
        k = self.norm_k(self._proj("to_k", src))
        v = self._proj("to_v", src)
        b, n, d = q.shape
        q = q.reshape(b, n, self.heads, d // self.heads)
        k = k.reshape(b, k.shape[1], self.heads, d // self.heads)
        v = v.reshape(b, v.shape[1], self.heads, d // self.heads)
        if rope is not None:
            q = rope_lib.apply(q, *rope)
            k = rope_lib.apply(k, *rope)
        out = jax.nn.dot_product_attention(q, k, v.astype(q.dtype))
        return self._proj("to_out", out.reshape(b, n, d))


class FeedForward(nnx.Module):
    """``Linear(D, ffn) -> GELU(tanh) -> Linear(ffn, D)`` (diffusers ``FeedForward``, ``net.0.proj`` / ``net.2``)."""

    def __init__(self, spec: WanDiTSpec, *, rngs: nnx.Rngs):
        dt, pdt = jnp.dtype(spec.dtype), jnp.dtype(spec.param_dtype)
        self.proj_in = dense(spec.dim, spec.ffn_dim, "embed", "mlp", dtype=dt, param_dtype=pdt, rngs=rngs)
        self.proj_out = dense(spec.ffn_dim, spec.dim, "mlp", "embed", dtype=dt, param_dtype=pdt, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj_out(jax.nn.gelu(self.proj_in(x), approximate=True))


class WanBlock(nnx.Module):
    """One transformer block; ``modulation (B, 6, D)`` float32 = (shift, scale, gate) for attention and FFN."""

    def __init__(self, spec: WanDiTSpec, *, rngs: nnx.Rngs):
        self.eps = spec.eps
        pdt = jnp.dtype(spec.param_dtype)
        self.attn1 = WanAttention(spec, rngs=rngs)
        self.attn2 = WanAttention(spec, rngs=rngs)
        self.norm2 = LayerNorm(spec.dim, spec.eps, param_dtype=pdt) if spec.cross_attn_norm else None
        self.ffn = FeedForward(spec, rngs=rngs)
        table = jax.random.normal(rngs.params(), (1, 6, spec.dim)) / spec.dim ** 0.5
        self.scale_shift_table = nnx.Param(table.astype(jnp.float32), **axes(None, None, "embed"))

    def __call__(self, x: jax.Array, context: jax.Array, modulation: jax.Array,
                 rope: tuple[jax.Array, jax.Array]) -> jax.Array:
        dtype = x.dtype
        mod = self.scale_shift_table[...].astype(jnp.float32) + modulation.astype(jnp.float32)
        shift, scale, gate, c_shift, c_scale, c_gate = (mod[:, i:i + 1] for i in range(6))
        h = (layer_norm(x, self.eps) * (1 + scale) + shift).astype(dtype)
        x = (x.astype(jnp.float32) + self.attn1(h, rope=rope).astype(jnp.float32) * gate).astype(dtype)
        h = self.norm2(x) if self.norm2 is not None else x
        x = x + self.attn2(h, context).astype(dtype)
        h = (layer_norm(x, self.eps) * (1 + c_scale) + c_shift).astype(dtype)
        return (x.astype(jnp.float32) + self.ffn(h).astype(jnp.float32) * c_gate).astype(dtype)


def timestep_sinusoids(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """``(B,)`` -> ``(B, dim)``: [cos | sin] of ``t · exp(-ln(max_period) · i / (dim/2))`` (diffusers
    ``Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)``)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class ConditionEmbedder(nnx.Module):
    """Time MLP (float32), its 6-way modulation projection, and the text projection."""

    def __init__(self, spec: WanDiTSpec, *, rngs: nnx.Rngs):
        d, dt, pdt = spec.dim, jnp.dtype(spec.dtype), jnp.dtype(spec.param_dtype)
        self.freq_dim = spec.freq_dim
        f32 = jnp.float32
        self.time_1 = dense(spec.freq_dim, d, None, "embed", dtype=f32, param_dtype=f32, rngs=rngs)
        self.time_2 = dense(d, d, "embed", "mlp", dtype=f32, param_dtype=f32, rngs=rngs)
        self.time_proj = dense(d, 6 * d, "embed", "mlp", dtype=f32, param_dtype=f32, rngs=rngs)
        self.text_1 = dense(spec.text_dim, d, "mlp", "embed", dtype=dt, param_dtype=pdt, rngs=rngs)
        self.text_2 = dense(d, d, "embed", "mlp", dtype=dt, param_dtype=pdt, rngs=rngs)

    def time(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``t (B,)`` -> temb ``(B, D)``, modulation ``(B, 6, D)`` (float32)."""
        temb = self.time_2(jax.nn.silu(self.time_1(timestep_sinusoids(t, self.freq_dim))))
        proj = self.time_proj(jax.nn.silu(temb))
        return temb, proj.reshape(proj.shape[0], 6, -1)

    def text(self, context: jax.Array) -> jax.Array:
        """``(B, L, text_dim)`` -> ``(B, L, D)``."""
        return self.text_2(jax.nn.gelu(self.text_1(context), approximate=True))


class WanDiT(nnx.Module):
    """The denoiser: ``(latents, timestep, text context) -> prediction`` with the latents' shape."""

    def __init__(self, spec: WanDiTSpec, *, rngs: nnx.Rngs):
        self.spec = spec
        d, dt, pdt = spec.dim, jnp.dtype(spec.dtype), jnp.dtype(spec.param_dtype)
        self.patch_embedding = dense(spec.patch_volume * spec.in_channels, d, None, "embed", dtype=dt,
                                     param_dtype=pdt, rngs=rngs)
        self.condition_embedder = ConditionEmbedder(spec, rngs=rngs)
        self.blocks = nnx.List([WanBlock(spec, rngs=rngs) for _ in range(spec.num_layers)])
        self.proj_out = dense(d, spec.patch_volume * spec.out_channels, "embed", None, dtype=dt, param_dtype=pdt,
                              rngs=rngs)
        table = jax.random.normal(rngs.params(), (1, 2, d)) / d ** 0.5
        self.scale_shift_table = nnx.Param(table.astype(jnp.float32), **axes(None, None, "embed"))

    def grid(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Token grid ``(F', H', W')`` for a latent of ``(F, H, W)``; refuses sizes the patch does not divide."""
        out = []
        for n, p, name in zip(shape, self.spec.patch_size, "FHW", strict=True):
            if n % p:
                raise ConfigError(f"latent {name}={n} is not divisible by the patch size {p} ({self.spec.patch_size})")
            out.append(n // p)
        return tuple(out)

    def patchify(self, latents: jax.Array) -> jax.Array:
        """``(B, F, H, W, C)`` -> ``(B, N, pt·ph·pw·C)``, tokens in (f, h, w) order, features in (pt, ph, pw, C)."""
        b, f, h, w, c = latents.shape
        (pt, ph, pw), (gf, gh, gw) = self.spec.patch_size, self.grid((f, h, w))
        x = latents.reshape(b, gf, pt, gh, ph, gw, pw, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
        return x.reshape(b, gf * gh * gw, pt * ph * pw * c)

    def unpatchify(self, tokens: jax.Array, grid: tuple[int, int, int]) -> jax.Array:
        """``(B, N, pt·ph·pw·C)`` -> ``(B, F, H, W, C)``."""
        (pt, ph, pw), (gf, gh, gw) = self.spec.patch_size, grid
        b = tokens.shape[0]
        x = tokens.reshape(b, gf, gh, gw, pt, ph, pw, -1).transpose(0, 1, 4, 2, 5, 3, 6, 7)
        return x.reshape(b, gf * pt, gh * ph, gw * pw, -1)

    def __call__(self, latents: jax.Array, timestep: jax.Array, context: jax.Array, *,
                 token_offsets: dict[int, jax.Array] | None = None, return_blocks: bool = False):
        """Predict for ``latents (B, F, H, W, C_in)`` at ``timestep (B,)`` (0..1000) given text ``context
        (B, L, text_dim)``; returns ``(B, F, H, W, C_out)`` float32.

        ``token_offsets``: ``{block index: (B, N, D)}`` added to the tokens before that block (audio tokens).
        ``return_blocks``: also return the output of every block (a list of ``(B, N, D)``).
        """
        chex.assert_rank(latents, 5)
        chex.assert_rank(context, 3)
        spec = self.spec
        dtype = jnp.dtype(spec.dtype)
        grid = self.grid(latents.shape[1:4])
        cos, sin = rope_lib.table(grid, spec.head_dim, spec.rope_max_seq_len, spec.rope_theta)
        x = self.patch_embedding(self.patchify(latents.astype(dtype))).astype(dtype)
        temb, modulation = self.condition_embedder.time(jnp.broadcast_to(timestep, latents.shape[:1]))
        ctx = self.condition_embedder.text(context.astype(dtype)).astype(dtype)

        def run_block(block, x, ctx, modulation, cos, sin):
            return block(x, ctx, modulation, (cos, sin))

        if spec.remat != "none":
            run_block = nnx.remat(run_block, policy=REMAT_POLICIES[spec.remat])
        outputs = []
        for i, block in enumerate(self.blocks):
            if token_offsets and i in token_offsets:
                x = x + token_offsets[i].astype(dtype)
            x = run_block(block, x, ctx, modulation, cos, sin)
            outputs.append(x)
        shift_scale = self.scale_shift_table[...].astype(jnp.float32) + temb[:, None].astype(jnp.float32)
        shift, scale = shift_scale[:, :1], shift_scale[:, 1:]
        h = (layer_norm(x, spec.eps) * (1 + scale) + shift).astype(dtype)
        out = self.unpatchify(self.proj_out(h).astype(jnp.float32), grid)
        return (out, outputs) if return_blocks else out


def add_lora(model: WanDiT, rank: int, *, alpha: float | None = None,
             projections: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out"), rngs: nnx.Rngs) -> WanDiT:
    """Add LoRA (rank ``rank``) to the given projections of every self- and cross-attention, in place.

    The adapters start at zero (the model's output is unchanged) and are ``nnx.LoRAParam``s.
    """
    spec = model.spec
    d = spec.dim
    axes_of = {"to_q": ("embed", "heads"), "to_k": ("embed", "heads"), "to_v": ("embed", "heads"),
               "to_out": ("heads", "embed")}
    unknown = set(projections) - set(axes_of)
    if unknown:
        raise ConfigError(f"unknown LoRA projections {sorted(unknown)}; choose from {sorted(axes_of)}")
    for block in model.blocks:
        for attn in (block.attn1, block.attn2):
            attn.lora = nnx.Dict({
                name: LoRA(d, d, rank, *axes_of[name], alpha=alpha, dtype=jnp.dtype(spec.dtype),
                           param_dtype=jnp.dtype(spec.param_dtype), rngs=rngs)
                for name in projections
            })
    return model


def count_params(spec: WanDiTSpec) -> int:
    """Number of parameters of a :class:`WanDiT` with ``spec``, from ``nnx.eval_shape`` (no memory)."""
    abstract = nnx.eval_shape(lambda: WanDiT(spec, rngs=nnx.Rngs(0)))
    return sum(math.prod(v.shape) for _, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param)))
