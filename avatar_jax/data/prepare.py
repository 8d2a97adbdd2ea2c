"""Videos -> clip records: decode, re-time, find the person, crop, resample audio, write ArrayRecords.

Per video (``DIR/<subject>/<name>.mp4``; a video directly in ``DIR`` is its own subject; an optional
``<name>.txt`` beside it is the transcript):

1. probe the container; no video stream / unreadable / empty file -> rejected;
2. no audio track -> rejected; audio is decoded to 16 kHz mono (:func:`avatar_jax.audio.io.load_audio`);
3. frames are decoded at ``data.fps`` (constant rate: variable-frame-rate input is re-timed and noted)
   at a working size, and cut into clips of at most ``data.clip_seconds``;
4. per clip the detector finds keypoints and masks; a clip where a person is seen in fewer than
   ``data.min_person_fraction`` of the frames is rejected ("no person"), one shorter than
   ``data.min_seconds`` is rejected ("too short");
5. one square crop per clip (:mod:`avatar_jax.data.crop`), resized to ``data.size``; keypoints and the
   camera (a pinhole with ``data.fov_y_deg`` vertical field of view, as nothing better is known) follow.

Every video ends with a status file ``OUT/status/<key>.json`` (ok with its clips, or rejected and why),
written last, so a rerun skips finished videos (resume) and redoes an interrupted one. Videos run in
parallel processes (``data.workers``); the report is ``OUT/prepare_report.json``.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing
import os
import re
import time
import warnings

import numpy as np

from avatar_jax.data import crop as crop_lib
from avatar_jax.data import index, records, schema, video
from avatar_jax.data.detect import Detector
from avatar_jax.errors import AvatarJaxError, InputError


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    fps: float = 25.0
    size: int = 256
    max_decode_side: int = 640
    clip_seconds: float = 10.0
    min_seconds: float = 1.0
    min_person_fraction: float = 0.5
    crop_margin: float = 0.15
    fov_y_deg: float = 50.0

    @classmethod
    def from_config(cls, data) -> PrepareOptions:
        return cls(**{f.name: type(f.default)(data[f.name]) for f in dataclasses.fields(cls) if f.name in data})


@dataclasses.dataclass
class VideoResult:
    source: str
    status: str  # "ok" | "rejected" | "skipped"
    reason: str = ""
    clips: list[str] = dataclasses.field(default_factory=list)
    rejected_clips: list[dict] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def find_videos(root: str) -> list[str]:
    """Video files under ``root`` (recursive), relative paths, sorted."""
    if not os.path.isdir(root):
        raise InputError(f"--videos must be a directory, got {root!r}")
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.lower().endswith(video.VIDEO_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def video_key(rel: str) -> str:
    """A file-name-safe id for a video's relative path."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(rel)[0].replace(os.sep, "__"))


def subject_of(rel: str) -> str:
    parts = rel.split(os.sep)
    return parts[0] if len(parts) > 1 else os.path.splitext(parts[0])[0]


def _status_path(out: str, rel: str) -> str:
    return os.path.join(out, "status", video_key(rel) + ".json")


def _camera(width: int, height: int, fov_y_deg: float) -> np.ndarray:
    f = 0.5 * height / np.tan(np.radians(fov_y_deg) / 2.0)
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], np.float64)


def _write_clip(out, clip_id, rel, frames, audio, t_first, det, opts, info, transcript) -> None:
    h, w = frames.shape[1:3]
    box = crop_lib.person_box(det, w, h)
    crop = crop_lib.choose_crop(box, opts.size, opts.crop_margin)
    K = crop.intrinsics(_camera(w, h, opts.fov_y_deg))
    bounds = schema.audio_bounds(np.arange(t_first, t_first + len(frames) + 1), opts.fps)
    with records.ClipWriter(out, clip_id, opts.size, opts.size) as writer:
        for i in range(len(frames)):
            kp = {k: det.keypoints[k][i] for k in schema.KEYPOINT_SHAPES}
            for name in ("face", "hands", "body"):
                kp[name] = crop.points(kp[name])
            writer.add(crop.image(frames[i]), crop.image(det.masks[i]), audio[bounds[i]:bounds[i + 1]], kp)
        meta = schema.ClipMeta(
            clip_id=clip_id, subject_id=subject_of(rel), num_frames=len(frames), fps=opts.fps, width=opts.size,
            height=opts.size, K=K.tolist(), viewmat=np.eye(4).tolist(), transcript=transcript, source=rel,
            extra={"first_frame": int(t_first), "crop": dataclasses.asdict(crop), "decode_size": [w, h],
                   "source_fps": info.fps, "fov_y_deg_assumed": opts.fov_y_deg})
        writer.finish(meta)


def prepare_video(videos_dir: str, rel: str, out: str, opts: PrepareOptions, detector: Detector) -> VideoResult:
    """Prepare one video into ``out`` (see module doc); never raises for bad input, it reports it."""
    start = time.perf_counter()
    path = os.path.join(videos_dir, rel)
    result = VideoResult(source=rel, status="ok")
    written: list[str] = []
    try:
        info = video.probe(path)
        if not info.has_audio:
            raise InputError("no audio track")
        if info.variable_rate:
            result.notes.append(f"variable frame rate ({info.fps:g} fps avg, {info.tbr:g} tbr): "
                                f"re-timed to {opts.fps:g} fps")
        elif info.fps and abs(info.fps - opts.fps) > 1e-3:
            result.notes.append(f"resampled from {info.fps:g} to {opts.fps:g} fps")
        from avatar_jax.audio.io import load_audio

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            audio, _ = load_audio(path)
        result.notes += [str(c.message) for c in caught]
        transcript_path = os.path.splitext(path)[0] + ".txt"
        transcript = open(transcript_path).read().strip() if os.path.exists(transcript_path) else ""
        size = video.decode_size(info.width, info.height, opts.max_decode_side)
        per_clip = max(1, int(round(opts.clip_seconds * opts.fps)))
        min_frames = max(1, int(round(opts.min_seconds * opts.fps)))
        total, buffer, t_first = 0, [], 0

        def flush(frames: list[np.ndarray], t0: int) -> None:
            clip_id = f"{video_key(rel)}_{t0 // per_clip:03d}"
            if len(frames) < min_frames:
                result.rejected_clips.append({"clip": clip_id, "reason": f"too short ({len(frames)} frames "
                                              f"< {min_frames})"})
                return
            stack = np.stack(frames)
            need = int(schema.audio_bounds(t0 + len(frames), opts.fps))
            clip_audio = audio if audio.size >= need else np.pad(audio, (0, need - audio.size))
            det = detector.detect(stack)
            seen = det.person_frames().mean()
            if seen < opts.min_person_fraction:
                result.rejected_clips.append({"clip": clip_id, "reason": f"no person (seen in {100 * seen:.0f}% "
                                              f"of frames < {100 * opts.min_person_fraction:.0f}%)"})
                return
            _write_clip(out, clip_id, rel, stack, clip_audio, t0, det, opts, info, transcript)
            written.append(clip_id)

        for frame in video.iter_frames(path, opts.fps, size):
            buffer.append(frame)
            total += 1
            if len(buffer) == per_clip:
                flush(buffer, t_first)
                buffer, t_first = [], total
        if total == 0:
            raise InputError("corrupt or zero-length video: no frames decoded")
        if buffer:
            flush(buffer, t_first)
        if audio.size < schema.audio_bounds(total, opts.fps) - schema.audio_bounds(1, opts.fps):
            result.notes.append(f"audio ({audio.size / 16000:.2f} s) is shorter than the video "
                                f"({total / opts.fps:.2f} s): padded with silence")
        if not written:
            reasons = sorted({c["reason"].split(" (")[0] for c in result.rejected_clips})
            raise InputError("; ".join(reasons) or "no usable clip")
        result.clips = written
    except (AvatarJaxError, OSError, ValueError) as e:
        for clip_id in written:  # a video is all or nothing: no half-prepared videos
            for p in schema.clip_paths(out, clip_id):
                if os.path.exists(p):
                    os.remove(p)
        result.status, result.reason, result.clips = "rejected", str(e), []
    result.seconds = time.perf_counter() - start
    os.makedirs(os.path.join(out, "status"), exist_ok=True)
    tmp = _status_path(out, rel) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dataclasses.asdict(result), f, indent=1)
    os.replace(tmp, _status_path(out, rel))
    return result


def _worker(args) -> VideoResult:
    videos_dir, rel, out, opts, detector = args
    return prepare_video(videos_dir, rel, out, opts, detector)


def prepare_folder(videos_dir: str, out: str, opts: PrepareOptions, detector: Detector, *, workers: int = 1,
                   force: bool = False, held_out: float = 0.1, seed: int = 0, progress: bool = True) -> dict:
    """Prepare every video under ``videos_dir`` into ``out``; returns the report (also written to disk)."""
    rels = find_videos(videos_dir)
    os.makedirs(out, exist_ok=True)
    results: list[VideoResult] = []
    todo = []
    for rel in rels:
        status = _status_path(out, rel)
        if not force and os.path.exists(status):
            with open(status) as f:
                prev = VideoResult(**json.load(f))
            if prev.status == "rejected" or all(records.is_complete(out, c) for c in prev.clips):
                prev.status = "skipped" if prev.status == "ok" else prev.status
                prev.notes = [*prev.notes, "already prepared (resume)"]
                results.append(prev)
                continue
        todo.append(rel)
    tasks = [(videos_dir, rel, out, opts, detector) for rel in todo]
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("prepare", total=len(tasks))
        if workers <= 1 or len(tasks) <= 1:
            for t in tasks:
                results.append(_worker(t))
                bar.advance(task)
        else:
            with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for r in pool.map(_worker, tasks):
                    results.append(r)
                    bar.advance(task)
    idx = index.build_index(out, held_out=held_out, seed=seed)
    report = {
        "videos": len(rels), "prepared": sum(r.status == "ok" for r in results),
        "skipped": sum(r.status == "skipped" for r in results),
        "rejected": sum(r.status == "rejected" for r in results), "clips": len(idx["clips"]),
        "results": [dataclasses.asdict(r) for r in sorted(results, key=lambda r: r.source)],
    }
    with open(os.path.join(out, "prepare_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report
