import os

import numpy as np
import pytest

from avatar_jax.data import codec, index, records, schema
from avatar_jax.errors import InputError

from .fake import fake_clip


def test_codec_round_trip_and_refusals():
    arrays = {"a": np.arange(12, dtype=np.int16).reshape(3, 4), "b": np.float32(2.5), "c": np.zeros((0, 2))}
    out = codec.decode(codec.encode(arrays))
    assert set(out) == {"a", "b", "c"}
    np.testing.assert_array_equal(out["a"], arrays["a"])
    assert out["b"].shape == () and out["b"] == 2.5 and out["c"].shape == (0, 2)
    with pytest.raises(InputError):
        codec.encode({"s": np.array(["x"])})
    with pytest.raises(InputError):
        codec.decode(codec.encode(arrays)[:-5])


def test_clip_write_read_round_trip(tmp_path):
    meta = fake_clip(tmp_path, "c0", "alice", 7, fps=25.0)
    reader = records.ClipReader(str(tmp_path), "c0")
    assert len(reader) == 7 and reader.meta.transcript == "clip c0" and reader.meta.num_samples == 7 * 640
    f3 = reader.frame(3)
    assert int(f3["index"]) == 3 and (f3["frame"] == 3).all() and f3["audio"].shape == (640,)
    np.testing.assert_allclose(f3["audio"][0], 3 * 640 / 1e5, rtol=1e-6)
    win = reader.window(2, 4)
    assert win["frame"].shape == (4, 8, 10, 3) and win["audio"].shape == (4 * 640,)
    np.testing.assert_allclose(win["audio"] * 1e5, np.arange(2 * 640, 6 * 640), atol=1e-2)
    np.testing.assert_array_equal(win["body"][:, 5, 0], [2, 3, 4, 5])
    assert meta.num_frames == 7
    with pytest.raises(InputError):
        reader.window(5, 4)
    reader.close()


def test_non_integer_hop_keeps_audio_contiguous(tmp_path):
    fake_clip(tmp_path, "c30", "bob", 5, fps=30.0)
    win = records.ClipReader(str(tmp_path), "c30").window(0, 5)
    assert win["audio"].size == int(schema.audio_bounds(5, 30.0)) == 2667
    np.testing.assert_allclose(win["audio"] * 1e5, np.arange(2667), atol=1e-2)


def test_unfinished_clip_is_not_complete_and_writer_cleans_up(tmp_path):
    with pytest.raises(RuntimeError):
        with records.ClipWriter(str(tmp_path), "broken", 8, 10) as w:
            w.add(np.zeros((8, 10, 3), np.uint8), np.zeros((8, 10), np.uint8), np.zeros(640, np.float32),
                  schema.empty_keypoints())
            raise RuntimeError("crash mid clip")
    assert not records.is_complete(str(tmp_path), "broken")
    assert os.listdir(tmp_path / "clips") == []
    with pytest.raises(InputError):
        records.ClipWriter(str(tmp_path), "bad", 8, 10).add(np.zeros((8, 9, 3), np.uint8), np.zeros((8, 10)),
                                                           np.zeros(640), schema.empty_keypoints())


def test_identity_aware_split_holds_out_a_share_of_every_subject():
    subjects = {f"s{s}_c{c}": f"s{s}" for s in range(5) for c in range(s * 5 + 1)}  # 1, 6, 11, 16, 21 clips
    split = index.assign_splits(subjects, held_out=0.1, seed=0)
    for s in range(5):
        clips = [c for c in subjects if subjects[c] == f"s{s}"]
        n_test = sum(split[c] == "test" for c in clips)
        assert n_test == (0 if len(clips) == 1 else max(1, round(0.1 * len(clips))))
    # the assignment of a clip does not depend on other subjects being present
    only_s3 = {c: s for c, s in subjects.items() if s == "s3"}
    sub = index.assign_splits(only_s3, held_out=0.1, seed=0)
    assert all(sub[c] == split[c] for c in only_s3)
    other_seed = index.assign_splits(subjects, held_out=0.1, seed=1)
    assert other_seed != split


def test_build_index_lists_finished_clips_only(tmp_path):
    for c in range(4):
        fake_clip(tmp_path, f"a{c}", "alice", 3)
    fake_clip(tmp_path, "b0", "bob", 3)
    os.remove(tmp_path / "clips" / "a3.json")  # an unfinished clip
    idx = index.build_index(str(tmp_path), held_out=0.1)
    assert [c["clip_id"] for c in idx["clips"]] == ["a0", "a1", "a2", "b0"]
    assert [c["split"] for c in idx["clips"] if c["subject_id"] == "alice"].count("test") == 1
    assert index.load_index(str(tmp_path)) == idx
    assert len(index.clips_in_split(idx, "test")) == 1 and len(index.clips_in_split(idx, "all")) == 4
