"""Small in-memory clips for record/loader tests: every value encodes where it came from."""

import numpy as np

from avatar_jax.data import records, schema


def fake_clip(root, clip_id, subject, num_frames, *, h=8, w=10, fps=25.0, seed=0):
    """Write a clip whose frame t is filled with t, audio sample s equals s/1e5, keypoints equal t."""
    rng = np.random.default_rng(seed)
    frames = np.stack([np.full((h, w, 3), t % 256, np.uint8) for t in range(num_frames)])
    masks = (rng.uniform(size=(num_frames, h, w)) * 255).astype(np.uint8)
    n = int(schema.audio_bounds(num_frames, fps))
    audio = (np.arange(n) / 1e5).astype(np.float32)
    kp = {k: np.full((num_frames, *s), 0.0, np.float32) + np.arange(num_frames, dtype=np.float32).reshape(
        (-1,) + (1,) * len(s)) for k, s in schema.KEYPOINT_SHAPES.items()}
    meta = schema.ClipMeta(clip_id=clip_id, subject_id=subject, num_frames=num_frames, fps=fps, width=w, height=h,
                           K=np.eye(3).tolist(), viewmat=np.eye(4).tolist(), transcript=f"clip {clip_id}",
                           source="fake")
    return records.write_clip(str(root), meta, frames, masks, audio, kp)
