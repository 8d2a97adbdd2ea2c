"""Video decoding with the ffmpeg binary bundled by imageio-ffmpeg: probe, then frames at a fixed rate.

Frames are always re-timed to the target rate with ffmpeg's ``fps`` filter (frame ``t`` is the source
frame shown at time ``t/fps``), which also turns variable-frame-rate input into a constant rate. A
stream is flagged variable-rate when its average rate and its time-base rate (``fps`` vs ``tbr``)
disagree. Audio is decoded separately by :func:`avatar_jax.audio.io.load_audio` (16 kHz mono).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from collections.abc import Iterator

import numpy as np

from avatar_jax.errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".m4v", ".avi")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float  # average frame rate (0 if unknown)
    tbr: float  # time-base rate
    duration_s: float
    has_audio: bool

    @property
    def variable_rate(self) -> bool:
        return self.fps > 0 and self.tbr > 0 and abs(self.fps - self.tbr) > 0.01 * self.tbr


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _rate(text: str | None) -> float:
    if not text:
        return 0.0
    value = float(text[:-1]) * 1000 if text.endswith("k") else float(text)
    return value


def probe(path: str) -> VideoInfo:
    """Read a container's header; InputError if the file is missing, unreadable or has no video stream."""
    if not os.path.isfile(path):
        raise InputError(f"not a file: {path!r}")
    if not os.access(path, os.R_OK):
        raise InputError(f"unreadable file (permission denied): {path!r}")
    if os.path.getsize(path) == 0:
        raise InputError(f"empty file (0 bytes): {path!r}")
    proc = subprocess.run([_ffmpeg(), "-hide_banner", "-nostdin", "-i", path], capture_output=True, text=True,
                          errors="replace", timeout=120)
    video = re.search(r"Stream #\d+:\d+.*?: Video: .*?(\d{2,5})x(\d{2,5})", proc.stderr)
    if video is None:
        last = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise InputError(f"no decodable video stream in {path!r} ({last[0]})")
    line = proc.stderr[video.start():].splitlines()[0]
    fps = re.search(r"([\d.]+k?) fps", line)
    tbr = re.search(r"([\d.]+k?) tbr", line)
    dur = re.search(r"Duration: (\d+):(\d+):([\d.]+)", proc.stderr)
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else 0.0
    has_audio = re.search(r"Stream #\d+:\d+.*?: Audio: ", proc.stderr) is not None
    return VideoInfo(int(video.group(1)), int(video.group(2)), _rate(fps and fps.group(1)),
                     _rate(tbr and tbr.group(1)), duration, has_audio)


def decode_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Working size: scaled so the longer side is at most ``max_side``, both sides even."""
    s = min(1.0, max_side / max(width, height))
    return max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)


def iter_frames(path: str, fps: float, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Yield ``(H, W, 3) uint8`` RGB frames at exactly ``fps`` (constant rate) scaled to ``size = (W, H)``.

    Raises InputError if ffmpeg fails part way (a truncated or corrupt stream).
    """
    w, h = size
    cmd = [_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", path, "-map", "0:v:0", "-an",
           "-vf", f"fps={fps},scale={w}:{h}:flags=area", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    nbytes = w * h * 3
    try:
        while True:
            data = proc.stdout.read(nbytes)
            if len(data) < nbytes:
                break
            yield np.frombuffer(data, np.uint8).reshape(h, w, 3)
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise InputError(f"corrupt video {path!r}: {err.splitlines()[-1] if err else 'ffmpeg failed'}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def write_video(path: str, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
                sample_rate: int = 16000) -> None:
    """Encode ``frames (T,H,W,3) uint8`` (H, W even) as H.264 with optional mono ``audio (S,)`` as AAC.

    Used by tests and the synthetic-clip preview; a wav is written next to the output and removed.
    """
    import imageio_ffmpeg
    import soundfile as sf

    t, h, w, _ = frames.shape
    wav = None
    if audio is not None:
        wav = path + ".tmp.wav"
        sf.write(wav, np.asarray(audio, np.float32), sample_rate)
    try:
        writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, macro_block_size=2, quality=8,
                                             audio_path=wav, audio_codec="aac" if wav else None,
                                             output_params=["-shortest"] if wav else None,
                                             ffmpeg_log_level="error")
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame, np.uint8))
        writer.close()
    finally:
        if wav and os.path.exists(wav):
            os.remove(wav)
