"""``avatar-jax demo``: the main job on the embedded default config, end to end on CPU.

Today it runs the pieces that exist: a 16 kHz signal's per-frame loudness (at the video frame rate)
drives SE(3) twists of particles, which are integrated over frames with ``lax.scan`` and seen through
a turntable of cameras. It writes ``trajectory.npz`` (transforms per frame) and ``views.png`` (the
particles' projections, one panel per camera). As the renderer, body template and model land, this
job grows into the full audio -> avatar video pipeline.
"""

from __future__ import annotations

import os
import time

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console

from avatar_jax.geometry import camera as cam_lib
from avatar_jax.geometry import se3


def add_arguments(parser):
    parser.add_argument("--out", default=None, help="output folder (default: config.demo.out)")


def frame_loudness(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """RMS of ``audio (S,)`` in each video frame's window -> ``(num_frames,)``; frame t covers [t/fps, (t+1)/fps)."""
    hop = sample_rate / fps
    out = np.zeros(num_frames, np.float32)
    for t in range(num_frames):
        seg = audio[int(round(t * hop)) : int(round((t + 1) * hop))]
        out[t] = np.sqrt(np.mean(seg**2)) if seg.size else 0.0
    return out


def synthetic_speech_like(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """A 16 kHz test signal with syllable-rate (4 Hz) amplitude bursts; stands in for speech offline."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(seed)
    carrier = np.sin(2 * np.pi * 180.0 * t) + 0.3 * rng.standard_normal(t.shape)
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t), 0.0, None) ** 2
    return (0.5 * envelope * carrier / np.abs(carrier).max()).astype(np.float32)


def particle_layout(num: int, seed: int) -> np.ndarray:
    """``(num, 3)`` rest positions roughly shaped like a standing person (1.7 m, facing -z)."""
    rng = np.random.default_rng(seed)
    height = rng.uniform(0.0, 1.7, num)
    width = np.where(height > 1.45, 0.09, np.where(height > 0.9, 0.18, 0.12))
    angle = rng.uniform(0, 2 * np.pi, num)
    return np.stack([width * np.cos(angle), height - 0.85, 0.6 * width * np.sin(angle)], -1).astype(np.float32)


def _draw_points(uv: np.ndarray, z: np.ndarray, width: int, height: int, color: np.ndarray) -> np.ndarray:
    img = np.full((height, width, 3), 255, np.uint8)
    order = np.argsort(-z)  # far first, near last
    for k in order:
        if z[k] <= 0.01:
            continue
        j, i = int(uv[k, 0]), int(uv[k, 1])
        img[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2] = color[k]
    return img


def run(args, config) -> int:
    console = Console()
    out = args.out or config.demo.out
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    c = config
    frames, m = c.demo.frames, c.model.num_particles

    audio = synthetic_speech_like(frames / c.audio.fps, c.audio.sample_rate, c.seed)
    loudness = frame_loudness(audio, c.audio.sample_rate, c.audio.fps, frames)

    rest = particle_layout(m, c.seed)
    # Particles above the neck nod with loudness; the rest sway slowly: twist about each particle.
    head = rest[:, 1] > 0.6
    key = jax.random.key(c.seed)
    axes = jax.random.normal(key, (m, 3)) * 0.02
    omega = jnp.where(head[None, :, None], jnp.array([1.0, 0.0, 0.0]) * 0.15, axes[None]) * loudness[:, None, None]
    # A rotation about point p: twist (w, -w x p) keeps p's neighbourhood rigid around p's centre.
    pivot = jnp.array([0.0, 0.55, 0.0])
    v = -jnp.cross(omega, pivot)
    decay = jnp.concatenate([jnp.zeros((1, m, 6)), -0.5 * jnp.concatenate([omega, v], -1)[:-1]], 0)
    twists = jnp.concatenate([omega, v], -1) + decay  # nod out, then come back
    transforms = jax.jit(se3.integrate)(twists, se3.identity((m,)))
    positions = se3.apply(transforms, jnp.asarray(rest)[None])  # (T, M, 3)

    cams = cam_lib.orbit(c.demo.views, radius=4.0, width=c.render.width, height=c.render.height,
                         elevation_deg=10.0, fov_y_deg=c.render.fov_y_deg)
    colors = (np.stack([rest[:, 1] + 0.85, 0.4 + 0 * rest[:, 0], 1.7 - rest[:, 1] - 0.85], -1) / 1.7 * 255)
    colors = np.clip(colors, 0, 255).astype(np.uint8)
    loudest = int(np.argmax(loudness))
    panels = []
    for k in range(c.demo.views):
        uv, z = cams[k].project(positions[loudest])
        panels.append(_draw_points(np.asarray(uv), np.asarray(z), c.render.width, c.render.height, colors))
    iio.imwrite(os.path.join(out, "views.png"), np.concatenate(panels, axis=1))
    np.savez(os.path.join(out, "trajectory.npz"), transforms=np.asarray(transforms), rest=rest,
             loudness=loudness, audio=audio)
    moved = float(jnp.max(jnp.linalg.norm(positions - rest[None], axis=-1)))
    console.print(
        f"[bold]demo[/bold]: {frames} frames x {m} particles, max displacement {moved:.3f} m, "
        f"loudest frame {loudest}; wrote {out}/views.png and trajectory.npz "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return 0
