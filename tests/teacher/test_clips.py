"""Sampled teacher clips are written as the clip records `prepare` writes and read back by the loader's reader."""

import numpy as np
import pytest

from avatar_jax.data import records, schema
from avatar_jax.data.detect import Detections
from avatar_jax.errors import InputError
from avatar_jax.teacher.clips import write_teacher_clip


class FakeDetector:
    def detect(self, frames):
        t, h, w = frames.shape[:3]
        kp = {k: np.full((t, *s), 0.5, np.float32) for k, s in schema.KEYPOINT_SHAPES.items()}
        kp["face"][:, schema.FACE_LOWER_LIP, 1] = np.arange(t)
        return Detections(kp, np.full((t, h, w), 255, np.uint8))


def test_teacher_clip_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (9, 24, 16, 3), dtype=np.uint8)
    audio = rng.normal(size=9 * 640).astype(np.float32) * 0.1
    meta = write_teacher_clip(str(tmp_path), "t0", "subject", frames, audio, detector=FakeDetector())
    assert meta.source == "teacher:wan2.1" and "synthetic" in meta.extra and meta.num_frames == 9
    reader = records.ClipReader(str(tmp_path), "t0")
    assert len(reader) == 9 and reader.meta.extra["keypoints_detected"] is True
    rec = reader.frame(4)
    schema.check_frame(rec, 24, 16)
    np.testing.assert_array_equal(rec["frame"], frames[4])
    np.testing.assert_array_equal(rec["audio"], audio[4 * 640:5 * 640])
    assert rec["face"][schema.FACE_LOWER_LIP, 1] == 4 and rec["mask"].min() == 255
    plain = write_teacher_clip(str(tmp_path), "t1", "subject", frames, audio[:100])
    assert plain.extra["keypoints_detected"] is False
    rec = records.ClipReader(str(tmp_path), "t1").frame(8)
    assert rec["face_conf"].max() == 0 and rec["mask"].max() == 0 and rec["audio"].shape == (640,)
    with pytest.raises(InputError, match="uint8"):
        write_teacher_clip(str(tmp_path), "t2", "s", frames.astype(np.float32), audio)
