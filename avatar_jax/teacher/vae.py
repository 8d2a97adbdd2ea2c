"""Wan2.1 causal 3-D video VAE (diffusers ``AutoencoderKLWan``, ``is_residual=False``) in Flax NNX.

    video (B, T, H, W, 3) in [-1, 1], T = 1 + 4k
      ──► encoder: causal conv ─ [res blocks ─ downsample (2-D, or 3-D: also /2 in time)] × levels
                   ─ mid (res ─ per-frame attention ─ res) ─ RMS norm ─ SiLU ─ causal conv
      ──► quant conv ──► moments (B, 1 + k, H/8, W/8, 2·z): mean | log-variance
    latent (B, F, h, w, z) ──► post-quant conv ──► decoder (mirror image, upsampling) ──► clamp ──► video

Causality: every 3-D convolution pads time on the past side only (``2·pad`` frames of zeros), so frame
``t`` of any feature map depends on input frames ``<= t``. Temporal down/upsampling treats the first
frame apart (it is kept as is, so 1 + 4k frames map to 1 + k latents and back), exactly as upstream.

Chunked processing: the state between chunks is the last two input frames of every causal conv (and the
last frame before each temporal downsampling), carried in a :class:`Stream`. ``encode(..., chunked=True)``
feeds 1, then 4 frames at a time (upstream's loop), ``decode(..., chunk_frames=n)`` ``n`` latent frames at
a time (upstream: 1); both equal the one-pass result, which is what ``jit`` of the full clip computes.

Layout is channels-last; the converter transposes diffusers' ``(B, C, T, H, W)`` weights.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from avatar_jax.audio.layers import axes
from avatar_jax.errors import ConfigError

CACHE_T = 2


@dataclasses.dataclass(frozen=True)
class WanVAESpec:
    """Architecture (diffusers config names); defaults are the Wan2.1 VAE."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    in_channels: int = 3
    out_channels: int = 3
    latents_mean: tuple[float, ...] = ()
    latents_std: tuple[float, ...] = ()
    dtype: str = "float32"

    def __post_init__(self):
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ConfigError(f"temperal_downsample needs {len(self.dim_mult) - 1} entries, got "
                              f"{self.temperal_downsample}")

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temperal_downsample)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)


class Stream:
    """State carried between chunks: a list of arrays read in call order (``None`` on the first chunk)."""

    def __init__(self, state: list | None = None):
        self.state, self.new, self.i = state, [], 0

    @property
    def first(self) -> bool:
        return self.state is None

    def read(self):
        value = None if self.state is None else self.state[self.i]
        self.i += 1
        return value

    def write(self, value: jax.Array) -> None:
        self.new.append(value)


def _conv(x: jax.Array, kernel: jax.Array, bias: jax.Array, stride=(1, 1, 1), padding=((0, 0),) * 3) -> jax.Array:
    """3-D conv ``(B, T, H, W, C)`` with kernel ``(kt, kh, kw, C, O)``, computed in the kernel's dtype."""
    y = jax.lax.conv_general_dilated(x.astype(kernel.dtype), kernel, stride, padding,
                                     dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return y + bias.astype(y.dtype)


class CausalConv3d(nnx.Module):
    """``Conv3d`` whose temporal padding (``2·pad_t`` frames) is all on the past side."""

    def __init__(self, cin: int, cout: int, kernel=(3, 3, 3), stride=(1, 1, 1), padding=(1, 1, 1), *,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        kt, kh, kw = kernel
        init = jax.nn.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (kt, kh, kw, cin, cout)),
                                **axes(None, None, None, "conv_in", "conv_out"))
        self.bias = nnx.Param(jnp.zeros((cout,)), **axes("conv_out"))
        self.stride, self.context = tuple(stride), 2 * padding[0]
        self.spatial = ((padding[1], padding[1]), (padding[2], padding[2]))
        self.dtype = dtype

    def __call__(self, x: jax.Array, stream: Stream | None = None) -> jax.Array:
        if self.context:
            prev = stream.read() if stream is not None else None
            if prev is None:
                prev = jnp.zeros((x.shape[0], self.context, *x.shape[2:]), x.dtype)
            x = jnp.concatenate([prev.astype(x.dtype), x], axis=1)
            if stream is not None:
                stream.write(x[:, -self.context:])
        return _conv(x, self.kernel[...].astype(self.dtype), self.bias[...], self.stride, ((0, 0), *self.spatial))


class Conv2d(nnx.Module):
    """Per-frame 2-D conv: kernel ``(kh, kw, C, O)`` applied to every frame of ``(B, T, H, W, C)``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, padding=((1, 1), (1, 1)), *,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        init = jax.nn.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (kernel, kernel, cin, cout)),
                                **axes(None, None, "conv_in", "conv_out"))
        self.bias = nnx.Param(jnp.zeros((cout,)), **axes("conv_out"))
        self.stride, self.padding, self.dtype = stride, tuple(padding), dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel[...].astype(self.dtype)[None]
        return _conv(x, k, self.bias[...], (1, self.stride, self.stride), ((0, 0), *self.padding))


class RMSNorm(nnx.Module):
    """``x / max(||x||, 1e-12) · sqrt(C) · gamma`` over channels (``WanRMS_norm``), in float32."""

    def __init__(self, dim: int):
        self.scale = dim ** 0.5
        self.gamma = nnx.Param(jnp.ones((dim,)), **axes("conv_out"))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        norm = jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(x32), -1, keepdims=True)), 1e-12)
        return (x32 / norm * self.scale * self.gamma[...]).astype(x.dtype)


class ResidualBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, *, dtype, rngs: nnx.Rngs):
        self.norm1 = RMSNorm(cin)
        self.conv1 = CausalConv3d(cin, cout, dtype=dtype, rngs=rngs)
        self.norm2 = RMSNorm(cout)
        self.conv2 = CausalConv3d(cout, cout, dtype=dtype, rngs=rngs)
        self.conv_shortcut = (CausalConv3d(cin, cout, (1, 1, 1), padding=(0, 0, 0), dtype=dtype, rngs=rngs)
                              if cin != cout else None)

    def __call__(self, x: jax.Array, stream: Stream | None = None) -> jax.Array:
        h = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        x = self.conv1(jax.nn.silu(self.norm1(x)), stream)
        x = self.conv2(jax.nn.silu(self.norm2(x)), stream)
        return x + h


class AttentionBlock(nnx.Module):
    """Single-head self-attention over the pixels of each frame (1×1 conv q, k, v and output)."""

    def __init__(self, dim: int, *, dtype, rngs: nnx.Rngs):
        self.norm = RMSNorm(dim)
        self.to_qkv = Conv2d(dim, 3 * dim, 1, padding=((0, 0), (0, 0)), dtype=dtype, rngs=rngs)
        self.proj = Conv2d(dim, dim, 1, padding=((0, 0), (0, 0)), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, stream: Stream | None = None) -> jax.Array:
        b, t, h, w, c = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(b * t, h * w, 1, 3 * c)
        q, k, v = jnp.split(qkv, 3, axis=-1)
        out = jax.nn.dot_product_attention(q, k, v).reshape(b, t, h, w, c)
        return self.proj(out) + x


class Resample(nnx.Module):
    """``upsample2d/3d`` (nearest ×2 then 3×3 conv; 3-D also doubles time by a causal conv to 2C channels)
    or ``downsample2d/3d`` (pad right/bottom, 3×3 stride-2 conv; 3-D also halves time, stride-2 conv)."""

    def __init__(self, dim: int, mode: str, out_dim: int | None = None, *, dtype, rngs: nnx.Rngs):
        self.mode = mode
        if mode.startswith("upsample"):
            self.conv = Conv2d(dim, out_dim if out_dim is not None else dim // 2, 3, dtype=dtype, rngs=rngs)
            self.time_conv = (CausalConv3d(dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0), dtype=dtype, rngs=rngs)
                              if mode == "upsample3d" else None)
        elif mode.startswith("downsample"):
            self.conv = Conv2d(dim, dim, 3, stride=2, padding=((0, 1), (0, 1)), dtype=dtype, rngs=rngs)
            self.time_conv = (CausalConv3d(dim, dim, (3, 1, 1), (2, 1, 1), padding=(0, 0, 0), dtype=dtype, rngs=rngs)
                              if mode == "downsample3d" else None)
        else:
            raise ConfigError(f"unknown resample mode {mode!r}")

    def _time_up(self, x: jax.Array, stream: Stream | None) -> jax.Array:
        first = stream is None or stream.first
        head, x = (x[:, :1], x[:, 1:]) if first else (None, x)
        if stream is not None and not first:
            y = self.time_conv(x, stream)
        else:  # first chunk: frame 0 is not upsampled in time; the rest sees zeros as its past
            inner = Stream() if stream is not None else None
            y = self.time_conv(x, inner) if x.shape[1] else None
            if stream is not None:
                stream.i += 1
                stream.write(inner.new[0] if inner.new else jnp.zeros((x.shape[0], CACHE_T, *x.shape[2:]), x.dtype))
        if y is not None:
            b, t, h, w, c2 = y.shape
            y = y.reshape(b, t, h, w, 2, c2 // 2).transpose(0, 1, 4, 2, 3, 5).reshape(b, 2 * t, h, w, c2 // 2)
        parts = [p for p in (head, y) if p is not None]
        return jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def _time_down(self, x: jax.Array, stream: Stream | None) -> jax.Array:
        first = stream is None or stream.first
        prev = x[:, :1] if first else stream.read()
        if first and stream is not None:
            stream.i += 1
        if stream is not None:
            stream.write(x[:, -1:])
        rest = x[:, 1:] if first else x
        # the stride-2 windows start at the frame before the chunk; the first frame itself is kept
        y = self.time_conv(jnp.concatenate([prev, rest], axis=1)) if rest.shape[1] >= 2 else None
        if first:
            return x[:, :1] if y is None else jnp.concatenate([x[:, :1], y], axis=1)
        return y

    def __call__(self, x: jax.Array, stream: Stream | None = None) -> jax.Array:
        if self.mode == "upsample3d":
            x = self._time_up(x, stream)
        if self.mode.startswith("upsample"):
            x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
        x = self.conv(x)
        if self.mode == "downsample3d":
            x = self._time_down(x, stream)
        return x


class MidBlock(nnx.Module):
    def __init__(self, dim: int, *, dtype, rngs: nnx.Rngs):
        self.resnets = nnx.List([ResidualBlock(dim, dim, dtype=dtype, rngs=rngs) for _ in range(2)])
        self.attention = AttentionBlock(dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, stream: Stream | None = None) -> jax.Array:
        x = self.resnets[0](x, stream)
        return self.resnets[1](self.attention(x), stream)


class Encoder(nnx.Module):
    def __init__(self, spec: WanVAESpec, *, rngs: nnx.Rngs):
        dt = jnp.dtype(spec.dtype)
        dims = [spec.base_dim * u for u in (1, *spec.dim_mult)]
        self.conv_in = CausalConv3d(spec.in_channels, dims[0], dtype=dt, rngs=rngs)
        blocks = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            for _ in range(spec.num_res_blocks):
                blocks.append(ResidualBlock(cin, cout, dtype=dt, rngs=rngs))
                cin = cout
            if i != len(spec.dim_mult) - 1:
                mode = "downsample3d" if spec.temperal_downsample[i] else "downsample2d"
                blocks.append(Resample(cout, mode, dtype=dt, rngs=rngs))
        self.down_blocks = nnx.List(blocks)
        self.mid_block = MidBlock(dims[-1], dtype=dt, rngs=rngs)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], 2 * spec.z_dim, dtype=dt, rngs=rngs)

    def __call__(self, x: jax.Array, stream: Stream | None = None) -> jax.Array:
        x = self.conv_in(x, stream)
        for block in self.down_blocks:
            x = block(x, stream)
        x = self.mid_block(x, stream)
        return self.conv_out(jax.nn.silu(self.norm_out(x)), stream)


class UpBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, num_res_blocks: int, mode: str | None, *, dtype, rngs: nnx.Rngs):
        self.resnets = nnx.List([ResidualBlock(cin if j == 0 else cout, cout, dtype=dtype, rngs=rngs)
                                 for j in range(num_res_blocks + 1)])
        self.upsampler = Resample(cout, mode, dtype=dtype, rngs=rngs) if mode else None

    def __call__(self, x: jax.Array, stream: Stream | None = None) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x, stream)
        return self.upsampler(x, stream) if self.upsampler is not None else x


class Decoder(nnx.Module):
    def __init__(self, spec: WanVAESpec, *, rngs: nnx.Rngs):
        dt = jnp.dtype(spec.dtype)
        dims = [spec.base_dim * u for u in (spec.dim_mult[-1], *spec.dim_mult[::-1])]
        up = spec.temperal_downsample[::-1]
        self.conv_in = CausalConv3d(spec.z_dim, dims[0], dtype=dt, rngs=rngs)
        self.mid_block = MidBlock(dims[0], dtype=dt, rngs=rngs)
        blocks = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            if i > 0:
                cin //= 2  # the previous upsampler halved the channels
            mode = None
            if i != len(spec.dim_mult) - 1:
                mode = "upsample3d" if up[i] else "upsample2d"
            blocks.append(UpBlock(cin, cout, spec.num_res_blocks, mode, dtype=dt, rngs=rngs))
        self.up_blocks = nnx.List(blocks)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], spec.out_channels, dtype=dt, rngs=rngs)

    def __call__(self, x: jax.Array, stream: Stream | None = None) -> jax.Array:
        x = self.mid_block(self.conv_in(x, stream), stream)
        for block in self.up_blocks:
            x = block(x, stream)
        return self.conv_out(jax.nn.silu(self.norm_out(x)), stream)


class WanVAE(nnx.Module):
    """Encoder, quant convs and decoder; :meth:`encode` gives the posterior moments, :meth:`decode` a video."""

    def __init__(self, spec: WanVAESpec, *, rngs: nnx.Rngs):
        self.spec = spec
        dt = jnp.dtype(spec.dtype)
        self.encoder = Encoder(spec, rngs=rngs)
        self.quant_conv = CausalConv3d(2 * spec.z_dim, 2 * spec.z_dim, (1, 1, 1), padding=(0, 0, 0), dtype=dt,
                                       rngs=rngs)
        self.post_quant_conv = CausalConv3d(spec.z_dim, spec.z_dim, (1, 1, 1), padding=(0, 0, 0), dtype=dt,
                                            rngs=rngs)
        self.decoder = Decoder(spec, rngs=rngs)

    def encode(self, video: jax.Array, *, chunked: bool = False) -> jax.Array:
        """``video (B, T, H, W, C)`` in [-1, 1] -> moments ``(B, 1 + (T-1)//4, H/8, W/8, 2z)`` (mean | logvar).

        Frames past ``1 + 4·((T-1)//4)`` are dropped, as upstream does. ``chunked``: upstream's loop
        (1 frame, then 4 at a time), which bounds memory; the result is the same.
        """
        chex.assert_rank(video, 5)
        f = self.spec.temporal_factor
        usable = 1 + f * ((video.shape[1] - 1) // f)
        video = video[:, :usable].astype(jnp.dtype(self.spec.dtype))
        if not chunked:
            out = self.encoder(video)
        else:
            state, outs = None, []
            for start, stop in [(0, 1)] + [(1 + f * i, 1 + f * (i + 1)) for i in range((usable - 1) // f)]:
                stream = Stream(state)
                outs.append(self.encoder(video[:, start:stop], stream))
                state = stream.new
            out = jnp.concatenate(outs, axis=1)
        return self.quant_conv(out).astype(jnp.float32)

    def latent_mean(self, video: jax.Array, **kw) -> jax.Array:
        """The posterior mode (mean) ``(B, F, h, w, z)``."""
        return self.encode(video, **kw)[..., : self.spec.z_dim]

    def decode(self, z: jax.Array, *, chunk_frames: int | None = None, clamp: bool = True) -> jax.Array:
        """``z (B, F, h, w, z)`` -> video ``(B, 1 + 4(F-1), 8h, 8w, C)`` clamped to [-1, 1].

        ``chunk_frames``: decode that many latent frames at a time, carrying the causal state (upstream
        decodes one at a time); None decodes in one pass. All give the same video.
        """
        chex.assert_rank(z, 5)
        x = self.post_quant_conv(z.astype(jnp.dtype(self.spec.dtype)))
        if chunk_frames is None:
            out = self.decoder(x)
        else:
            state, outs = None, []
            for start in range(0, x.shape[1], chunk_frames):
                stream = Stream(state)
                outs.append(self.decoder(x[:, start:start + chunk_frames], stream))
                state = stream.new
            out = jnp.concatenate(outs, axis=1)
        out = out.astype(jnp.float32)
        return jnp.clip(out, -1.0, 1.0) if clamp else out

    def normalize(self, latents: jax.Array) -> jax.Array:
        """VAE latents -> the DiT's latent space: ``(z - mean) / std`` per channel (config statistics)."""
        if not self.spec.latents_mean:
            return latents
        return (latents - jnp.asarray(self.spec.latents_mean)) / jnp.asarray(self.spec.latents_std)

    def denormalize(self, latents: jax.Array) -> jax.Array:
        """Inverse of :meth:`normalize` (what the Wan pipeline does before ``decode``)."""
        if not self.spec.latents_mean:
            return latents
        return latents * jnp.asarray(self.spec.latents_std) + jnp.asarray(self.spec.latents_mean)
