"""Audio -> frames through an exported bundle on this machine: frames/s and where the time goes.

A model of the config's size (parameters nudged off their initialisation, as a trained one) drives a
20k-Gaussian person-shaped avatar; it is exported to a bundle (this platform only) at 256x256 and
512x512 and streamed exactly as ``avatar-jax render`` does, with the front camera. Every stage is
compiled by a warm-up clip first. Then, per size, the same clip is streamed twice, alternately, ``repeats``
times: as ``render`` runs it (model and render in flight together: frames/s, wall and CPU seconds) and
with each stage waited for in turn (``profile=True``), which splits the time into encoder (audio ->
driving tokens, one pass), model (driving -> per-frame Gaussians, in chunks) and render (Gaussians ->
images). Wall times depend on what else the machine runs; CPU times (process, all threads) much less,
so both are reported: ``cpu_ms_per_frame`` is what real time must fit into ``cores x 1000 / fps``.
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
from avatar_jax.train import state as state_lib


def _speech(seconds: float, sample_rate: int) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(0)
    return (0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2) * rng.standard_normal(t.size)).astype(np.float32)


def _stream(bundle, audio, cams, chunk, profile: bool) -> StreamStats:
    stats = StreamStats()
    for _ in stream_frames(bundle, audio, cams, chunk=chunk, stats=stats, profile=profile):
        pass
    return stats


def run(config, out_dir) -> dict:
    del out_dir
    quick = bool(config.bench.quick)
    gaussians = 2_000 if quick else 20_000
    sizes = [(64, 64)] if quick else [(256, 256), (512, 512)]
    seconds, chunk, repeats = (1.0, 8, 1) if quick else (4.0, 25, 3)
    model = state_lib.initial_model(config)  # a pretrained audio encoder (config.audio) included
    graphdef, params = nnx.split(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(config.seed), len(jax.tree.leaves(params))))
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(next(keys), p.shape, p.dtype), params)
    avatar = synthetic_avatar(gaussians, config.model.num_particles, k=config.model.bind_k, seed=config.seed)
    rows = []
    print(f"inference: {gaussians} Gaussians, d_model={config.model.d_model}, {config.model.num_particles} "
          f"particles, {seconds:g} s of audio at {config.audio.fps:g} fps, chunks of {chunk} frames, "
          f"best of {repeats}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    print(f"{'size':>9} {'frames/s':>9} {'CPU ms/f':>9} | profiled ms/frame, wall (CPU): {'encoder':>13} "
          f"{'model':>13} {'render':>13} | {'capacity':>9}")
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        path = os.path.join(tmp, "bundle")
        export_bundle(path, config=config, graphdef=graphdef, params=params, avatar=avatar, resolutions=sizes,
                      platforms=[current_platform()])
        bundle = load_bundle(path)
        audio = _speech(seconds, bundle.sample_rate)
        for w, h in sizes:
            cams = camera_path(bundle.front, w, h)
            warm = _stream(bundle, audio, cams, chunk, profile=False)  # warm-up: compiles every stage
            runs, profiles = [], []
            for _ in range(repeats):
                runs.append(_stream(bundle, audio, cams, chunk, profile=False))
                profiles.append(_stream(bundle, audio, cams, chunk, profile=True))
            best = min(runs, key=lambda s: s.total_s)
            prof = min(profiles, key=lambda s: s.total_cpu_s)
            n = best.frames
            cap = next(r["capacity"] for r in bundle.manifest["resolutions"] if (r["width"], r["height"]) == (w, h))
            row = dict(width=w, height=h, frames=n, seconds=best.total_s, frames_per_second=best.frames_per_second,
                       cpu_ms_per_frame=1e3 * min(s.total_cpu_s for s in runs) / n,
                       frames_per_second_runs=[s.frames_per_second for s in runs], capacity=cap,
                       load_average=os.getloadavg()[0], warm_up_seconds=warm.total_s)
            for stage in ("encoder", "model", "render"):
                attr = "encode" if stage == "encoder" else stage
                row[f"{stage}_ms_per_frame"] = 1e3 * getattr(prof, f"{attr}_s") / n
                row[f"{stage}_cpu_ms_per_frame"] = 1e3 * getattr(prof, f"{attr}_cpu_s") / n
            row["profiled_seconds"] = prof.total_s
            rows.append(row)
            cells = " ".join(f"{row[f'{s}_ms_per_frame']:>6.1f} ({row[f'{s}_cpu_ms_per_frame']:>4.1f})"
                             for s in ("encoder", "model", "render"))
            print(f"{w:>4}x{h:<4} {row['frames_per_second']:>9.2f} {row['cpu_ms_per_frame']:>9.1f} | "
                  f"{'':>29} {cells} | {cap:>9}  (load {row['load_average']:.1f}, first clip with compiles "
                  f"{warm.total_s:.0f} s)")
    return {"rows": rows, "gaussians": gaussians, "audio_seconds": seconds, "chunk": chunk, "repeats": repeats,
            "target_frames_per_second": float(config.audio.fps), "platform": current_platform()}
