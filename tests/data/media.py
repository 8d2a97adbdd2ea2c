"""Test media made on the fly: a red disc (the stand-in "person") moving over grey, flashes, and a tone
with bursts at known frames. Nothing is committed; all of it is generated here."""

import subprocess

import imageio_ffmpeg
import numpy as np

from avatar_jax.data import schema, video
from avatar_jax.data.detect import Detections

W, H, FPS = 96, 72, 25.0
FLASHES = (20, 45)


def disc_centre(t: float, num_frames: int) -> tuple[float, float]:
    """Centre of the disc at frame t (pixels, continuous coordinates)."""
    return 20.0 + 56.0 * t / max(num_frames - 1, 1), 36.0 + 8.0 * np.sin(t / 6.0)


def shapes_video(num_frames: int, *, person: bool = True, flashes=FLASHES, fps: float = FPS) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    frames = np.full((num_frames, H, W, 3), 90, np.uint8)
    for t in range(num_frames):
        if t in flashes:
            frames[t] = 230
        cx, cy = disc_centre(t, num_frames)
        if person:
            frames[t][(xx - cx) ** 2 + (yy - cy) ** 2 <= 10.0 ** 2] = (220, 30, 30)
        frames[t, 60:66, (5 * t) % 80:(5 * t) % 80 + 10] = (30, 30, 220)  # a distractor, moving
    return frames


def tone_with_bursts(num_frames: int, fps: float = FPS, flashes=FLASHES) -> np.ndarray:
    n = int(schema.audio_bounds(num_frames, fps))
    t = np.arange(n) / 16000.0
    audio = 0.1 * np.sin(2 * np.pi * 220.0 * t)
    for f in flashes:
        a, b = schema.audio_bounds([f, f + 1], fps)
        audio[a:b] += 0.6 * np.sin(2 * np.pi * 2000.0 * t[a:b])
    return audio.astype(np.float32)


def make_mp4(path, num_frames=75, *, person=True, audio=True, fps=FPS):
    frames = shapes_video(num_frames, person=person)
    video.write_video(str(path), frames, fps, tone_with_bursts(num_frames, fps) if audio else None)
    return frames


def transcode(src, dst, args):
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([exe, "-y", "-loglevel", "error", "-i", str(src), *args, str(dst)], check=True)


def burst_energy(audio: np.ndarray) -> float:
    """Energy of ``audio`` near 2 kHz (the burst), by projection on a 2 kHz quadrature pair."""
    t = np.arange(audio.size) / 16000.0
    return float(np.hypot(audio @ np.sin(2 * np.pi * 2000 * t), audio @ np.cos(2 * np.pi * 2000 * t)))


class RedDiscDetector:
    """Injected detector: the person is the red disc; its centroid is the 'nose', its pixels the mask."""

    calls = 0

    def detect(self, frames):
        t = frames.shape[0]
        kp = {k: np.zeros((t, *s), np.float32) for k, s in schema.KEYPOINT_SHAPES.items()}
        f = frames.astype(np.int16)
        red = (f[..., 0] > 150) & (f[..., 1] < 100) & (f[..., 2] < 100)
        for i in range(t):
            ys, xs = np.nonzero(red[i])
            if xs.size > 20:
                kp["body"][i, schema.BODY_NOSE] = (xs.mean() + 0.5, ys.mean() + 0.5)
                kp["body_conf"][i, schema.BODY_NOSE] = 1.0
        return Detections(kp, (red * 255).astype(np.uint8))
