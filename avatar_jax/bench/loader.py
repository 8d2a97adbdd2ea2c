"""Loader throughput: sequences/s of the grain pipeline over a synthetic dataset written on the spot.

A dataset of clips (random frames, keypoints and audio; 128x128, 25 fps) is written with the real
record writer to a temporary folder, then the batched, shuffled, prefetching pipeline of
:mod:`avatar_jax.data.loader` is timed for a fixed number of batches after one warm-up batch, for a few
thread counts. Decoding (the codec), ArrayRecord reads and stacking are all inside the timing.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from avatar_jax.data import index, loader, records, schema

CLIPS, FRAMES, SIZE = 8, 100, 128
SEQ_LEN, BATCH, BATCHES = 8, 8, 20


def _write_dataset(root: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c in range(CLIPS):
        frames = rng.integers(0, 256, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
        masks = rng.integers(0, 256, (FRAMES, SIZE, SIZE), dtype=np.uint8)
        audio = rng.uniform(-0.5, 0.5, int(schema.audio_bounds(FRAMES, 25.0))).astype(np.float32)
        kp = {k: rng.uniform(0, SIZE, (FRAMES, *s)).astype(np.float32) for k, s in schema.KEYPOINT_SHAPES.items()}
        meta = schema.ClipMeta(clip_id=f"bench{c:02d}", subject_id=f"s{c % 4}", num_frames=FRAMES, fps=25.0,
                               width=SIZE, height=SIZE, K=np.eye(3).tolist(), viewmat=np.eye(4).tolist())
        records.write_clip(root, meta, frames, masks, audio, kp)
    index.build_index(root, held_out=0.0)


def run(config, out_dir) -> dict:
    del out_dir
    seed = int(getattr(config, "seed", 0))
    rows = []
    with tempfile.TemporaryDirectory() as root:
        _write_dataset(root, seed)
        source = loader.WindowSource(root, "train", seq_len=SEQ_LEN, stride=2)
        print(f"{len(source)} windows of {SEQ_LEN} frames at {SIZE}x{SIZE}; batch {BATCH}")
        print(f"{'threads':>7} {'prefetch':>8} {'seq/s':>10} {'MB/s':>8}")
        for threads, prefetch in ((0, 0), (1, 8), (2, 16)):
            ds = loader.make_dataset(source, batch_size=BATCH, seed=seed, shard_index=0, shard_count=1,
                                     num_threads=threads, prefetch=prefetch)
            it = iter(ds)
            first = next(it)
            nbytes = sum(v.nbytes for v in first.values())
            start = time.perf_counter()
            for _ in range(BATCHES):
                next(it)
            dt = time.perf_counter() - start
            seqs = BATCHES * BATCH / dt
            rows.append(dict(threads=threads, prefetch=prefetch, sequences_per_s=seqs,
                             megabytes_per_s=BATCHES * nbytes / dt / 1e6, seconds=dt))
            print(f"{threads:>7} {prefetch:>8} {seqs:>10.1f} {BATCHES * nbytes / dt / 1e6:>8.1f}", flush=True)
    return {"seq_len": SEQ_LEN, "batch_size": BATCH, "image_size": SIZE, "rows": rows}
