"""Write rendered frames and their audio as an H.264/AAC mp4 (ffmpeg from imageio-ffmpeg).

The file is written next to its destination under a temporary name and moved into place only when
complete, so an interrupted job never leaves a truncated video behind.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import imageio_ffmpeg
import numpy as np
import soundfile

from avatar_jax.errors import InputError


def to_uint8(frames) -> np.ndarray:
    """``(T,H,W,3)`` floats in [0,1] (or uint8) -> uint8."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_video(path: str, frames, fps: float, audio: np.ndarray | None = None, sample_rate: int = 16000,
                crf: int = 18) -> str:
    """Write ``frames (T,H,W,3)`` at ``fps`` and optional mono ``audio (S,)`` to ``path`` (mp4).

    Width and height must be even (H.264 4:2:0). Returns ``path``.
    """
    frames = to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise InputError(f"frames must be (T,H,W,3) with T > 0, got {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise InputError(f"video width and height must be even for H.264, got {w}x{h}")
    out_dir = os.path.dirname(os.path.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".video-") as tmp:
        silent = os.path.join(tmp, "video.mp4")
        writer = imageio_ffmpeg.write_frames(silent, (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                             quality=None, output_params=["-crf", str(crf)], macro_block_size=1)
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        final = os.path.join(tmp, "final.mp4")
        if audio is not None and len(audio):
            wav = os.path.join(tmp, "audio.wav")
            soundfile.write(wav, np.asarray(audio, np.float32), sample_rate)
            cmd = [ffmpeg, "-y", "-loglevel", "error", "-i", silent, "-i", wav, "-c:v", "copy", "-c:a", "aac",
                   "-b:a", "128k", "-shortest", final]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"ffmpeg failed to mux audio into {path}: {res.stderr.strip()[-400:]}")
        else:
            os.replace(silent, final)
        os.replace(final, path)
    return path
