"""Training batches: grain windows (T frames + their exact audio span) -> sharded device arrays.

Each host reads only its share of the windows (:func:`avatar_jax.data.loader.make_dataset` shards by
process) and contributes ``batch_size / process_count`` sequences; the global batch is assembled
with ``jax.make_array_from_process_local_data`` and split over the mesh's batch axes. Frames and
masks travel as uint8 and become floats inside the step.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import numpy as np

from avatar_jax.data import loader
from avatar_jax.errors import ConfigError, InputError
from avatar_jax.train import sharding

KEYPOINT_FIELDS = ("face", "face_conf", "hands", "hands_conf", "body", "body_conf")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
    """``B`` sequences of ``T`` frames: ``audio (B,A)`` f32 (``A = T*sr/fps``), ``frames (B,T,H,W,3)`` and
    ``masks (B,T,H,W)`` uint8, keypoints in pixels ``face (B,T,478,2)``, ``hands (B,T,2,21,2)``,
    ``body (B,T,33,2)`` with ``*_conf`` confidences, camera ``K (B,3,3)``, ``viewmat (B,4,4)``; ``start (B,)``
    int32, each window's first frame in its clip (the position encoding's absolute index), and ``init
    (B,M,4,4)`` the teacher's particle state before that frame where it is known (None: start at rest)."""

    audio: jax.Array
    frames: jax.Array
    masks: jax.Array
    face: jax.Array
    face_conf: jax.Array
    hands: jax.Array
    hands_conf: jax.Array
    body: jax.Array
    body_conf: jax.Array
    K: jax.Array
    viewmat: jax.Array
    start: jax.Array | None = None
    init: jax.Array | None = None

    @property
    def num_frames(self) -> int:
        return self.frames.shape[1]

    def check(self) -> None:
        b, t, h, w = self.masks.shape
        chex.assert_shape(self.frames, (b, t, h, w, 3))
        chex.assert_shape(self.audio, (b, None))
        chex.assert_shape([self.K, self.viewmat], [(b, 3, 3), (b, 4, 4)])


def from_numpy(item: dict[str, np.ndarray], start_states: list[np.ndarray] | None = None) -> Batch:
    """A loader batch (dict of numpy arrays, see :class:`avatar_jax.data.loader.WindowSource`) -> Batch.

    ``start_states``: per clip of the source, ``(T+1,M,4,4)`` teacher particle states (row ``s``: before frame
    ``s``, :func:`avatar_jax.train.avatar.teacher_start_states`); each window's ``init`` is read from it."""
    skip = ("frames", "masks", "start", "init")
    fields = {f.name: item[f.name] for f in dataclasses.fields(Batch) if f.name not in skip}
    start = np.asarray(item["start"], np.int32) if "start" in item else None
    init = None
    if start_states is not None:
        clip = np.asarray(item["clip"]).reshape(-1)
        init = np.stack([start_states[c][s] for c, s in zip(clip, start.reshape(-1), strict=True)])
        init = init.reshape(np.shape(start) + init.shape[1:]).astype(np.float32)
    return Batch(frames=item["frame"], masks=item["mask"], start=start, init=init, **fields)


def make_source(config, root: str, split: str = "train") -> loader.WindowSource:
    """Every ``train.seq_len``-frame window of ``split``; unreadable files become one :class:`InputError`."""
    seq_len = int(config.train.seq_len)
    try:
        return loader.WindowSource(root, split, seq_len, int(config.data.stride) or seq_len)
    except InputError:
        raise
    except Exception as e:  # ArrayRecord reports corrupt files as RuntimeError
        raise InputError(f"dataset {root!r} is unreadable: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def make_iterator(config, source: loader.WindowSource):
    """A checkpointable iterator over this host's batches (``get_state``/``set_state``)."""
    hosts = jax.process_count()
    if config.train.batch_size % hosts:
        raise ConfigError(f"train.batch_size={config.train.batch_size} must be divisible by the "
                          f"{hosts} processes")
    ds = loader.make_dataset(source, batch_size=config.train.batch_size // hosts, seed=config.seed,
                             num_threads=int(config.data.num_threads), prefetch=int(config.data.prefetch))
    return iter(ds)


def next_batch(iterator, root: str, start_states: list[np.ndarray] | None = None) -> Batch:
    """The next host-local batch; a record that cannot be read becomes one clear :class:`InputError`."""
    try:
        item = next(iterator)
    except InputError:
        raise
    except StopIteration:
        raise InputError(f"dataset {root!r} ran out of batches") from None
    except Exception as e:  # grain surfaces reader errors from its threads with their own types
        raise InputError(f"dataset {root!r} is unreadable: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    return from_numpy(item, start_states)


def batch_shardings(mesh, batch: Batch) -> Batch:
    """Every field split over the mesh's batch axes along its first dimension, the rest replicated."""
    return jax.tree.map(lambda x: sharding.named_sharding(mesh, ("batch",) + (None,) * (np.ndim(x) - 1)), batch)


def to_device(batch: Batch, shardings: Batch) -> Batch:
    """Host-local numpy batch -> global sharded arrays (every process passes its own share)."""
    return jax.tree.map(lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x)), batch, shardings)
