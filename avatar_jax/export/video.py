"""Write rendered frames and their audio as an H.264/AAC mp4 (ffmpeg from imageio-ffmpeg).

The file is written next to its destination under a temporary name and moved into place only when
complete, so an interrupted job never leaves a truncated video behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import warnings

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


@contextlib.contextmanager
def _quiet_fork():
    """Python 3.12 warns on any fork once JAX has started threads; subprocess forks straight into exec
    (no Python runs in the child), so starting ffmpeg is safe and the warning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


class VideoStream:
    """Write an mp4 frame batch by frame batch (bounded memory); the audio is muxed in at :meth:`close`.

    ``with VideoStream(path, width, height, fps, audio) as video: video.send(frames (n,H,W,3) uint8)``.
    Everything is written in a temporary folder beside ``path`` and moved into place only by a
    successful close: an exception (or Ctrl-C) inside the ``with`` leaves no partial file behind.
    """

    def __init__(self, path: str, width: int, height: int, fps: float, audio: np.ndarray | None = None,
                 sample_rate: int = 16000, crf: int = 18):
        if height % 2 or width % 2:
            raise InputError(f"video width and height must be even for H.264, got {width}x{height}")
        self.path, self.size, self.fps = path, (width, height), fps
        self.audio, self.sample_rate, self.frames = audio, sample_rate, 0
        out_dir = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(out_dir, exist_ok=True)
            self._tmp = tempfile.mkdtemp(dir=out_dir, prefix=".video-")
        except OSError as e:
            raise InputError(f"cannot write {path!r}: {e.strerror or e}") from None
        self._silent = os.path.join(self._tmp, "video.mp4")
        self._writer = imageio_ffmpeg.write_frames(self._silent, (width, height), fps=fps, codec="libx264",
                                                   pix_fmt_out="yuv420p", quality=None,
                                                   output_params=["-crf", str(crf)], macro_block_size=1)
        with _quiet_fork():
            self._writer.send(None)  # starts ffmpeg

    def send(self, frames) -> None:
        """Append ``frames (n,H,W,3)`` (uint8, or floats in [0,1])."""
        frames = to_uint8(frames)
        if frames.ndim != 4 or frames.shape[1:] != (self.size[1], self.size[0], 3):
            raise InputError(f"frames must be (n,{self.size[1]},{self.size[0]},3), got {frames.shape}")
        for frame in frames:
            self._writer.send(np.ascontiguousarray(frame))
        self.frames += len(frames)

    def close(self) -> str:
        """Finish the video, mux the audio (padded or cut to the video's length) and move it into place."""
        try:
            self._writer.close()
            if self.frames == 0:
                raise InputError(f"no frames were rendered for {self.path!r}")
            final = self._silent
            if self.audio is not None and len(self.audio):
                final = os.path.join(self._tmp, "final.mp4")
                n = int(round(self.frames * self.sample_rate / self.fps))  # audio exactly as long as the video
                audio = np.zeros(n, np.float32)
                audio[:min(n, len(self.audio))] = np.asarray(self.audio, np.float32)[:n]
                wav = os.path.join(self._tmp, "audio.wav")
                soundfile.write(wav, audio, self.sample_rate)
                cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", self._silent, "-i", wav,
                       "-c:v", "copy", "-c:a", "aac", "-b:a", "128k", "-ar", "48000", final]
                with _quiet_fork():
                    res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    raise RuntimeError(f"ffmpeg failed to mux audio into {self.path}: {res.stderr.strip()[-400:]}")
            try:
                os.replace(final, self.path)
            except OSError as e:
                raise InputError(f"cannot write {self.path!r}: {e.strerror or e}") from None
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far (no file appears at ``path``)."""
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001  (ffmpeg may already be gone; the folder goes anyway)
            pass
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def stream_durations(path: str) -> dict[str, float]:
    """Duration in seconds of each stream of a media file (``video``, ``audio``) and ``video_frames``,
    from ffmpeg's per-packet timestamps (``-f framecrc``: exact, no ffprobe needed)."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", path, "-c", "copy", "-f", "framecrc", "-"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise InputError(f"cannot read {path!r}: {res.stderr.strip()[-300:]}")
    time_base, kinds, spans, counts = {}, {}, {}, {}
    for line in res.stdout.splitlines():
        if line.startswith("#tb "):
            idx, frac = line[4:].split(":")
            num, den = frac.strip().split("/")
            time_base[int(idx)] = int(num) / int(den)
        elif line.startswith("#media_type "):
            idx, kind = line[len("#media_type "):].split(":")
            kinds[int(idx)] = kind.strip()
        elif line and not line.startswith("#"):
            stream, _dts, pts, duration = (int(x) for x in line.split(",")[:4])
            lo, hi = spans.get(stream, (pts, pts + duration))
            spans[stream] = (min(lo, pts), max(hi, pts + duration))
            counts[stream] = counts.get(stream, 0) + 1
    out: dict[str, float] = {}
    for stream, (lo, hi) in spans.items():
        kind = kinds.get(stream, f"stream{stream}")
        out[kind] = (hi - lo) * time_base[stream]
        if kind == "video":
            out["video_frames"] = counts[stream]
    return out
