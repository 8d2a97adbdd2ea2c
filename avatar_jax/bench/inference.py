"""Audio -> frames through an exported bundle on this machine: frames/s and where the time goes.

A model of the config's size (parameters nudged off their initialisation, as a trained one) drives a
20k-Gaussian person-shaped avatar; it is exported to a bundle (this platform only) at 256x256 and
512x512 and streamed exactly as ``avatar-jax render`` does, with the front camera. Every stage is
compiled by a warm-up clip first; the timed clip then splits into encoder (audio -> driving tokens,
one pass), model (driving -> per-frame Gaussians, in chunks) and render (Gaussians -> images).
"""

from __future__ import annotations

import os
import tempfile

import jax
import numpy as np
from flax import nnx

from avatar_jax.export.bundle import export_bundle
from avatar_jax.export.loader import current_platform, load_bundle
from avatar_jax.inference.cameras import camera_path
from avatar_jax.inference.stream import StreamStats, stream_frames
from avatar_jax.model.canonical import synthetic_avatar
from avatar_jax.model.talking import TalkingAvatar


def _speech(seconds: float, sample_rate: int) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(0)
    return (0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2) * rng.standard_normal(t.size)).astype(np.float32)


def run(config, out_dir) -> dict:
    del out_dir
    quick = bool(config.bench.quick)
    gaussians = 2_000 if quick else 20_000
    sizes = [(64, 64)] if quick else [(256, 256), (512, 512)]
    seconds, chunk = (1.0, 8) if quick else (4.0, 25)
    model = TalkingAvatar(config, nnx.Rngs(config.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(config.seed), len(jax.tree.leaves(params))))
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(next(keys), p.shape, p.dtype), params)
    avatar = synthetic_avatar(gaussians, config.model.num_particles, k=config.model.bind_k, seed=config.seed)
    rows = []
    print(f"inference: {gaussians} Gaussians, d_model={config.model.d_model}, {config.model.num_particles} "
          f"particles, {seconds:g} s of audio at {config.audio.fps:g} fps, chunks of {chunk} frames")
    print(f"{'size':>9} {'frames/s':>9} {'encoder ms/f':>13} {'model ms/f':>11} {'render ms/f':>12} {'capacity':>9}")
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        path = os.path.join(tmp, "bundle")
        export_bundle(path, config=config, graphdef=graphdef, params=params, avatar=avatar, resolutions=sizes,
                      platforms=[current_platform()])
        bundle = load_bundle(path)
        audio = _speech(seconds, bundle.sample_rate)
        for w, h in sizes:
            cams = camera_path(bundle.front, w, h)
            for _ in stream_frames(bundle, audio, cams, chunk=chunk):  # warm-up: compiles every stage
                pass
            stats = StreamStats()
            for _ in stream_frames(bundle, audio, cams, chunk=chunk, stats=stats):
                pass
            n = stats.frames
            cap = next(r["capacity"] for r in bundle.manifest["resolutions"] if (r["width"], r["height"]) == (w, h))
            row = dict(width=w, height=h, frames=n, seconds=stats.total_s, frames_per_second=stats.frames_per_second,
                       encoder_ms_per_frame=1e3 * stats.encode_s / n, model_ms_per_frame=1e3 * stats.model_s / n,
                       render_ms_per_frame=1e3 * stats.render_s / n, capacity=cap)
            rows.append(row)
            print(f"{w:>4}x{h:<4} {row['frames_per_second']:>9.2f} {row['encoder_ms_per_frame']:>13.1f} "
                  f"{row['model_ms_per_frame']:>11.1f} {row['render_ms_per_frame']:>12.1f} {cap:>9}")
    return {"rows": rows, "gaussians": gaussians, "audio_seconds": seconds, "chunk": chunk,
            "target_frames_per_second": float(config.audio.fps), "platform": current_platform()}
