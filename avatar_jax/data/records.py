"""Write and read one clip: an ArrayRecord file of frame records plus its ``ClipMeta`` JSON.

Writing is crash-safe and makes resuming trivial: records go to ``*.array_record.partial`` and the
metadata JSON is written (atomically, by rename) only after the records file is complete, so a clip
whose JSON exists is finished and a clip without it is redone from scratch.
"""

from __future__ import annotations

import os

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from avatar_jax.data import codec, schema
from avatar_jax.errors import InputError

# group_size:1 -> every record is its own chunk, so reading frame t never decompresses its neighbours.
WRITER_OPTIONS = "group_size:1,zstd:3"


def is_complete(root: str, clip_id: str) -> bool:
    records, meta = schema.clip_paths(root, clip_id)
    return os.path.exists(records) and os.path.exists(meta)


class ClipWriter:
    """Stream frames of one clip into ``root/clips/<clip_id>.array_record``.

    ``add(frame (H,W,3) uint8, mask (H,W) uint8, audio (S_t,) float32, keypoints)`` per frame in order,
    then ``finish(meta)``. ``abort()`` (or an exception inside a ``with`` block) removes the partial file.
    """

    def __init__(self, root: str, clip_id: str, height: int, width: int):
        os.makedirs(os.path.join(root, "clips"), exist_ok=True)
        self.root, self.clip_id, self.height, self.width = root, clip_id, height, width
        self.records_path, self.meta_path = schema.clip_paths(root, clip_id)
        self.partial = self.records_path + ".partial"
        for stale in (self.meta_path, self.records_path, self.partial):
            if os.path.exists(stale):
                os.remove(stale)
        self._writer = ArrayRecordWriter(self.partial, WRITER_OPTIONS)
        self.count = 0

    def add(self, frame: np.ndarray, mask: np.ndarray, audio: np.ndarray, keypoints: dict[str, np.ndarray]) -> None:
        rec = {"frame": np.asarray(frame, np.uint8), "mask": np.asarray(mask, np.uint8),
               "audio": np.asarray(audio, np.float32)}
        rec.update({k: np.asarray(keypoints[k], np.float32) for k in schema.KEYPOINT_SHAPES})
        rec["index"] = np.asarray(self.count, np.int32)
        schema.check_frame(rec, self.height, self.width)
        self._writer.write(codec.encode(rec))
        self.count += 1

    def finish(self, meta: schema.ClipMeta) -> schema.ClipMeta:
        if meta.num_frames != self.count:
            raise InputError(f"clip {self.clip_id}: metadata says {meta.num_frames} frames, wrote {self.count}")
        if (meta.height, meta.width) != (self.height, self.width) or meta.clip_id != self.clip_id:
            raise InputError(f"clip {self.clip_id}: metadata does not match the writer")
        self._writer.close()
        self._writer = None
        os.replace(self.partial, self.records_path)
        tmp = self.meta_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(meta.to_json())
        os.replace(tmp, self.meta_path)
        return meta

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if os.path.exists(self.partial):
            os.remove(self.partial)

    def __enter__(self) -> ClipWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._writer is not None:
            self.abort()


def write_clip(root: str, meta: schema.ClipMeta, frames: np.ndarray, masks: np.ndarray, audio: np.ndarray,
               keypoints: dict[str, np.ndarray]) -> schema.ClipMeta:
    """Whole-clip convenience: ``frames (T,H,W,3)``, ``masks (T,H,W)``, ``audio (S,)`` at 16 kHz (padded
    with zeros or cut to ``meta.num_samples``), ``keypoints`` with a leading ``T`` axis per field."""
    t_count, h, w = frames.shape[:3]
    bounds = schema.audio_bounds(np.arange(t_count + 1), meta.fps, meta.sample_rate)
    audio = np.asarray(audio, np.float32)
    if audio.size < bounds[-1]:
        audio = np.concatenate([audio, np.zeros(bounds[-1] - audio.size, np.float32)])
    with ClipWriter(root, meta.clip_id, h, w) as writer:
        for t in range(t_count):
            writer.add(frames[t], masks[t], audio[bounds[t]:bounds[t + 1]], {k: v[t] for k, v in keypoints.items()})
        return writer.finish(meta)


class ClipReader:
    """Random access to one finished clip: ``meta``, ``len()``, ``frame(t)``, ``window(t0, length)``."""

    def __init__(self, root: str, clip_id: str):
        records, meta_path = schema.clip_paths(root, clip_id)
        if not os.path.exists(meta_path):
            raise InputError(f"clip {clip_id!r} is not in {root!r} (or was not finished)")
        self.meta = schema.ClipMeta.load(meta_path)
        self._reader = ArrayRecordReader(records)
        if self._reader.num_records() != self.meta.num_frames:
            raise InputError(f"clip {clip_id!r}: {self._reader.num_records()} records, "
                             f"metadata says {self.meta.num_frames}")

    def __len__(self) -> int:
        return self.meta.num_frames

    def frame(self, t: int) -> dict[str, np.ndarray]:
        return codec.decode(self._reader.read([int(t)])[0])

    def window(self, t0: int, length: int) -> dict[str, np.ndarray]:
        """Frames ``t0 .. t0+length-1`` stacked (leading axis ``length``); ``audio`` is their concatenated span."""
        if t0 < 0 or t0 + length > len(self):
            raise InputError(f"window [{t0}, {t0 + length}) is outside clip of {len(self)} frames")
        recs = [codec.decode(b) for b in self._reader.read(list(range(t0, t0 + length)))]
        return stack_frames(recs)

    def close(self) -> None:
        self._reader.close()


def stack_frames(recs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-frame records; audio spans are concatenated into one ``(S,)`` array."""
    out = {k: np.stack([r[k] for r in recs]) for k in recs[0] if k != "audio"}
    out["audio"] = np.concatenate([r["audio"] for r in recs])
    return out
