"""``render_video``: a bundle + audio -> an H.264 mp4 with the audio muxed in sync (and optionally one
3DGS ``.ply`` per frame), streamed chunk by chunk with a progress bar.

Nothing half-written is left behind: the mp4 and the ``.ply`` folder are built under temporary
names beside their destinations and moved into place only when the whole clip has rendered; an
error or Ctrl-C removes them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

import numpy as np

from avatar_jax.errors import InputError
from avatar_jax.export.loader import Bundle
from avatar_jax.export.video import VideoStream
from avatar_jax.inference.cameras import CameraPath
from avatar_jax.inference.ply_frames import write_gaussians_ply
from avatar_jax.inference.stream import StreamStats, num_output_frames, stream_frames


def check_writable(path: str, what: str = "output") -> None:
    """Fail early, with one line, if ``path`` cannot be created (missing permission, a folder in the way)."""
    parent = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise InputError(f"{what} {path!r} is a folder; give a file name")
    probe_dir = parent
    while not os.path.exists(probe_dir):  # the folders will be created: check the nearest existing one
        probe_dir = os.path.dirname(probe_dir)
    if not os.path.isdir(probe_dir) or not os.access(probe_dir, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {path!r}: {probe_dir!r} is not a writable folder")


def render_video(bundle: Bundle, audio: np.ndarray, out: str, path: CameraPath, *, fps: float | None = None,
                 chunk: int = 16, ply_dir: str | None = None, progress: bool = True,
                 on_batch: Callable[[int], None] | None = None) -> StreamStats:
    """Render ``audio (S,)`` (float32 at ``bundle.sample_rate``) seen through ``path`` into ``out`` (mp4).

    ``ply_dir``: also write ``frame_000000.ply``... there. ``on_batch(frames_done)`` is called after each
    batch (tests use it to interrupt). Returns the stream's timings.
    """
    if not out.lower().endswith(".mp4"):
        raise InputError(f"output must be an .mp4 file, got {out!r}")
    check_writable(out, "video")
    if ply_dir is not None:
        if os.path.exists(ply_dir):
            raise InputError(f"--ply-sequence folder {ply_dir!r} exists; choose a new one")
        check_writable(ply_dir, "ply folder")
    fps = float(fps or bundle.fps)
    total = num_output_frames(np.asarray(audio).size, bundle.sample_rate, fps)
    stats = StreamStats()
    ply_tmp = None
    bar = _progress(progress, total)
    try:
        if ply_dir is not None:
            parent = os.path.dirname(os.path.abspath(ply_dir))
            os.makedirs(parent, exist_ok=True)
            ply_tmp = tempfile.mkdtemp(dir=parent, prefix=".ply-")
        with bar as live, VideoStream(out, path.width, path.height, fps, audio, bundle.sample_rate) as video:
            task = live.add_task("render", total=total, fps=0.0) if live else None
            for batch in stream_frames(bundle, audio, path, fps=fps, chunk=chunk, with_gaussians=ply_tmp is not None,
                                       stats=stats):
                video.send(batch.rgb)
                if ply_tmp is not None:
                    for i in range(batch.rgb.shape[0]):
                        write_gaussians_ply(os.path.join(ply_tmp, f"frame_{batch.start + i:06d}.ply"),
                                            **{k: v[i] for k, v in batch.gaussians.items()})
                if live:
                    live.update(task, completed=stats.frames, fps=stats.frames_per_second)
                if on_batch is not None:
                    on_batch(stats.frames)
        if ply_tmp is not None:
            os.replace(ply_tmp, ply_dir)
            ply_tmp = None
    finally:
        if ply_tmp is not None:
            shutil.rmtree(ply_tmp, ignore_errors=True)
    return stats


class _NoProgress:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _progress(enabled: bool, total: int):
    if not enabled:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[fps]:.1f} frames/s"), TimeRemainingColumn(), transient=False)
