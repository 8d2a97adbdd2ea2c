"""grain input pipeline: fixed-length windows of frames with their audio span, sharded, shuffled, batched.

A *sequence* is ``seq_len`` consecutive frames of one clip starting at a multiple of ``stride``, with
the clip's 16 kHz audio over exactly the same time, ``[t0/fps, (t0+seq_len)/fps)``. Pipeline:

    WindowSource (random access over every window of a split, reading ArrayRecord files)
      -> global shuffle with ``seed`` (reshuffled every epoch) -> repeat -> batch (drop remainder)
      -> per-host shard (this host's rows of every global batch, see make_dataset)
      -> to_iter_dataset with thread prefetch.

Every stage is index-based, so the iterator's ``get_state()`` is a few integers and ``set_state`` puts
a restarted job at exactly the next batch it would have seen.
"""

from __future__ import annotations

import dataclasses
import json

import grain
import numpy as np

from avatar_jax.data import codec, index, schema
from avatar_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class Window:
    clip: int  # position of the clip in the source's clip list
    start: int  # first frame


class WindowSource:
    """grain RandomAccessDataSource: item ``i`` is window ``i`` of the split, decoded to numpy.

    Item fields: the per-frame fields of :mod:`avatar_jax.data.schema` stacked over ``L = seq_len``
    (``frame (L,H,W,3)``...), ``audio (A,)`` with ``A = round(L·sr/fps)`` (the exact span; padded with
    zeros past the end of a clip, never needed at 25 fps), ``K (3,3)``, ``viewmat (4,4)``,
    ``subject ()`` / ``clip ()`` int32 ids (positions in ``subjects`` / ``clip_ids``), ``start ()``.
    """

    def __init__(self, root: str, split: str = "train", seq_len: int = 8, stride: int | None = None):
        if seq_len < 1:
            raise InputError(f"seq_len must be >= 1, got {seq_len}")
        stride = stride or seq_len
        entries = index.clips_in_split(index.load_index(root), split)
        if not entries:
            raise InputError(f"dataset {root!r} has no clips in split {split!r}")
        self.root, self.seq_len, self.stride = root, seq_len, stride
        self.metas = [schema.ClipMeta.load(schema.clip_paths(root, e["clip_id"])[1]) for e in entries]
        sizes = {(m.height, m.width) for m in self.metas}
        rates = {(m.fps, m.sample_rate) for m in self.metas}
        if len(sizes) != 1 or len(rates) != 1:
            raise InputError(f"clips of one split must share image size and rates to batch, got {sizes}, {rates}")
        self.height, self.width = sizes.pop()
        self.fps, self.sample_rate = rates.pop()
        self.audio_len = int(round(seq_len * self.sample_rate / self.fps))
        self.clip_ids = [m.clip_id for m in self.metas]
        self.subjects = sorted({m.subject_id for m in self.metas})
        self._subject = np.array([self.subjects.index(m.subject_id) for m in self.metas], np.int32)
        self._camera = [(np.asarray(m.K, np.float32), np.asarray(m.viewmat, np.float32)) for m in self.metas]
        # One grain ArrayRecord source over all clip files; clip k's frame t is record offset[k] + t.
        self._records = grain.sources.ArrayRecordDataSource(
            [schema.clip_paths(root, m.clip_id)[0] for m in self.metas])
        self._offset = np.concatenate([[0], np.cumsum([m.num_frames for m in self.metas])])
        self.windows = [Window(k, s) for k, m in enumerate(self.metas)
                        for s in range(0, m.num_frames - seq_len + 1, stride)]
        if not self.windows:
            raise InputError(f"no clip in split {split!r} has {seq_len} frames")

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        w = self.windows[int(i)]
        first = int(self._offset[w.clip]) + w.start
        recs = [codec.decode(b) for b in self._records.__getitems__(range(first, first + self.seq_len))]
        out = {k: np.stack([r[k] for r in recs]) for k in recs[0] if k != "audio"}
        audio = np.concatenate([r["audio"] for r in recs])
        out["audio"] = np.pad(audio, (0, max(0, self.audio_len - audio.size)))[: self.audio_len]
        out["K"], out["viewmat"] = self._camera[w.clip]
        out["subject"] = self._subject[w.clip]
        out["clip"] = np.int32(w.clip)
        out["start"] = np.int32(w.start)
        return out

    def __repr__(self) -> str:
        return f"WindowSource({self.root!r}, {len(self)} windows of {self.seq_len} frames)"


def make_dataset(source: WindowSource, *, batch_size: int, seed: int = 0, shuffle: bool = True,
                 num_epochs: int | None = None, shard_index: int | None = None, shard_count: int | None = None,
                 num_threads: int = 2, prefetch: int = 4) -> grain.IterDataset:
    """The batched pipeline over ``source`` (see module doc). Batches are dicts of ``(B, ...)`` arrays.

    ``batch_size`` is this host's share of the global batch ``batch_size * shard_count``.
    ``shard_index/shard_count`` default to this JAX process and the process count. All hosts walk one
    shuffled stream of windows; global batch ``k`` is stream items ``[kG, (k+1)G)`` and host ``p``
    takes (and reads from disk) only its rows ``[kG + p·batch_size, kG + (p+1)·batch_size)``. So the
    global batches do not depend on the host count: N hosts train on exactly what one host would.
    ``num_epochs=None`` repeats forever.
    """
    if shard_index is None or shard_count is None:
        import jax

        shard_index, shard_count = jax.process_index(), jax.process_count()
    if not 0 <= shard_index < shard_count:
        raise InputError(f"shard_index {shard_index} out of range for {shard_count} shards")
    if len(source) < batch_size * shard_count:
        raise InputError(f"{len(source)} windows cannot fill a batch of {batch_size} on each of {shard_count} host(s)")
    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    # MapDatasets are lazy: slicing the batched stream means a host only ever reads its own rows.
    ds = ds.repeat(num_epochs).batch(batch_size, drop_remainder=True)
    if num_epochs is not None:
        ds = ds[: len(ds) // shard_count * shard_count]  # every host gets as many batches
    ds = ds[shard_index::shard_count]
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))


def make_loader(root: str, *, split: str = "train", seq_len: int = 8, stride: int | None = None,
                batch_size: int = 8, **kwargs) -> tuple[WindowSource, grain.IterDataset]:
    """``(source, dataset)``; ``iter(dataset)`` gives a checkpointable iterator (``get_state``/``set_state``)."""
    source = WindowSource(root, split, seq_len, stride)
    return source, make_dataset(source, batch_size=batch_size, **kwargs)


def save_state(iterator, path: str) -> None:
    """Write an iterator's position as JSON (grain states are small dicts of ints)."""
    with open(path, "w") as f:
        json.dump(iterator.get_state(), f)


def restore_state(iterator, path: str) -> None:
    with open(path) as f:
        iterator.set_state(json.load(f))
