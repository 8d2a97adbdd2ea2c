import dataclasses

import numpy as np
import pytest

from avatar_jax.data import corpus, index, loader, motion, records, rig, schema, synthetic, visemes


@pytest.fixture(scope="module")
def face_rig():
    return rig.build_rig(synthetic.figure_from_avatar("synthetic", 2000, seed=0))


def _mouth_dark_pixels(frame, face_kp):
    """Dark (mouth interior) pixels in a box spanning the mouth corners, from the upper lip down."""
    u0, u1 = sorted([face_kp[schema.FACE_MOUTH_LEFT, 0], face_kp[schema.FACE_MOUTH_RIGHT, 0]])
    v = face_kp[schema.FACE_UPPER_LIP, 1]
    roi = frame[int(v) - 2:int(v) + 8, int(u0):int(np.ceil(u1))].astype(np.float32)
    return float((roi.mean(-1) < 90).sum())


def test_corpus_covers_the_conversational_categories():
    data = corpus.load_corpus()
    assert set(data) == set(corpus.CATEGORIES) and all(len(v) >= 8 for v in data.values())
    picked = corpus.sentences(8)
    assert [c for c, _ in picked[:4]] == list(corpus.CATEGORIES) and len({s for _, s in picked}) == 8


def test_visemes():
    assert visemes.jaw_open("m") == visemes.jaw_open("_:") == 0.0
    assert visemes.jaw_open("'a") > visemes.jaw_open("i:") > visemes.jaw_open("f")
    assert visemes.stress("'a") == 2 and visemes.stress(",V") == 1 and visemes.is_vowel("'oU")


@pytest.mark.slow
def test_mouth_opening_in_rendered_frames_follows_the_phonemes(face_rig):
    clip = synthetic.make_clip(face_rig, "Bob, my map is above the bay.", "en-us", size=64, framing="face")
    t_count = clip.frames.shape[0]
    assert clip.audio.size == t_count * 640 and clip.masks.shape == (t_count, 64, 64)
    kp = clip.keypoints["face"]
    measured = np.array([_mouth_dark_pixels(clip.frames[t], kp[t]) for t in range(t_count)])
    # 1) the rendered opening tracks the viseme curve derived from the phoneme timings
    assert np.corrcoef(measured, clip.controls.jaw)[0, 1] > 0.75
    # 2) frames inside bilabial closures (b, m, p) are shut; frames inside open vowels are open
    centre = (np.arange(t_count) + 0.5) / 25.0

    def frames_in(pred):
        return [t for t in range(t_count) for p, s, e in clip.phonemes if pred(p) and s <= centre[t] < e]

    closed = frames_in(lambda p: visemes.strip(p) in ("b", "m", "p"))
    opened = frames_in(lambda p: visemes.jaw_open(p) >= 0.8)
    assert closed and opened
    assert measured[opened].mean() > 3 * max(measured[closed].mean(), 1.0)
    # 3) exact keypoints: the lip gap is the jaw curve, the person mask covers the face
    gap = kp[:, schema.FACE_LOWER_LIP, 1] - kp[:, schema.FACE_UPPER_LIP, 1]
    assert np.corrcoef(gap, clip.controls.jaw)[0, 1] > 0.99
    assert (clip.keypoints["face_conf"][:, schema.FACE_UPPER_LIP] == 1).all()
    u, v = np.round(kp[0, schema.FACE_NOSE_TIP]).astype(int)
    assert clip.masks[0, v, u] > 250


def test_two_voices_and_two_sentences_give_different_motion():
    from avatar_jax.audio.tts import synthesize_detailed

    def controls(text, voice):
        s = synthesize_detailed(text, voice)
        n = int(np.ceil(s.audio.size / 640))
        return motion.from_speech(s.phonemes, np.pad(s.audio, (0, n * 640 - s.audio.size)), n, seed=0)

    a = controls("Hello there, it is really good to see you today.", "en-us")
    b = controls("Hello there, it is really good to see you today.", "en-gb-scotland")
    c = controls("Shall we try it together, step by step?", "en-us")
    for other in (b, c):
        n = min(a.num_frames, other.num_frames)
        assert np.abs(a.jaw[:n] - other.jaw[:n]).mean() > 0.05
        assert np.abs(a.nod[:n] - other.nod[:n]).max() > 0.01
    # the motion is a function of the speech: the same speech gives the same motion
    again = motion.from_speech([("'a", 0.0, 0.2), ("m", 0.2, 0.3), ("'i:", 0.3, 0.5)], np.ones(8000, np.float32) * 0.1,
                               12, seed=3)
    twice = motion.from_speech([("'a", 0.0, 0.2), ("m", 0.2, 0.3), ("'i:", 0.3, 0.5)], np.ones(8000, np.float32) * 0.1,
                               12, seed=3)
    np.testing.assert_array_equal(again.jaw, twice.jaw)
    assert again.beat.max() > 0.1 and again.blink.max() >= 0.0


def test_rig_moves_jaw_lids_head_and_arms(face_rig):
    t = 4
    c = motion.Controls(jaw=np.array([0, 1, 0, 0], np.float32), round=np.zeros(t, np.float32),
                        blink=np.array([0, 0, 1, 0], np.float32), nod=np.array([0, 0, 0, 0.2], np.float32),
                        yaw=np.zeros(t, np.float32), beat=np.array([[0, 0], [0, 0], [0, 0], [0.3, 0]], np.float32))
    tf = rig.bone_transforms(face_rig, c)
    kp = {k: v[0] for k, v in rig.keypoints_3d(face_rig, tf).items()}
    face, body = kp["face"], kp["body"]
    rest = face[0]
    assert face[1, schema.FACE_LOWER_LIP, 1] < rest[schema.FACE_LOWER_LIP, 1] - 0.02  # jaw drops the lip
    assert np.allclose(face[1, schema.FACE_UPPER_LIP], rest[schema.FACE_UPPER_LIP], atol=1e-6)
    lid = face[2, schema.FACE_LEFT_EYE_UPPER, 1]
    assert abs(lid - rest[schema.FACE_LEFT_EYE_LOWER, 1]) < 1e-3  # a closed lid meets the lower lid
    assert face[3, schema.FACE_NOSE_TIP, 1] < rest[schema.FACE_NOSE_TIP, 1] - 0.005  # nod: chin down
    wrist = body[:, schema.BODY_LEFT_WRIST]
    assert wrist[3, 1] > wrist[0, 1] + 0.015 and wrist[3, 2] < wrist[0, 2] - 0.1  # beat: hand up, towards camera
    np.testing.assert_allclose(body[3, schema.BODY_RIGHT_WRIST], body[0, schema.BODY_RIGHT_WRIST], atol=1e-6)
    means, _ = rig.pose(face_rig, tf)
    np.testing.assert_allclose(np.asarray(means[0]), face_rig.figure.means, atol=1e-5)


@pytest.mark.slow
def test_prepare_synthetic_writes_the_same_records_and_resumes(tmp_path):
    opts = synthetic.SyntheticOptions(size=48, num_gaussians=1000, voices=("en+m3",), sentences=2, subjects=1)
    report = synthetic.prepare_synthetic("synthetic", str(tmp_path), opts, progress=False)
    assert report == {"clips": 2, "written": 2, "skipped": 0}
    idx = index.load_index(str(tmp_path))
    assert [c["split"] for c in idx["clips"]].count("test") == 1  # 10% of 2 clips of one identity, at least 1
    clip = records.ClipReader(str(tmp_path), idx["clips"][0]["clip_id"])
    assert clip.meta.transcript in {s for _, s in corpus.sentences(2)} and clip.meta.fps == 25.0
    assert len(clip.meta.extra["controls"]["jaw"]) == clip.meta.num_frames
    source = loader.WindowSource(str(tmp_path), "train", seq_len=10)
    batch = next(iter(loader.make_dataset(source, batch_size=2, seed=0, shard_index=0, shard_count=1)))
    assert batch["frame"].shape == (2, 10, 48, 48, 3) and batch["audio"].shape == (2, 6400)
    assert (batch["body_conf"][:, :, schema.BODY_NOSE] == 1).all()
    again = synthetic.prepare_synthetic("synthetic", str(tmp_path), opts, progress=False)
    assert again == {"clips": 2, "written": 0, "skipped": 2}


def test_two_generations_of_a_clip_are_identical():
    """Reproducible data: rig, eSpeak speech, motion and renders made twice from scratch are equal bit for bit
    (a training run's numbers depend on its clips; the acceptance test regenerates them every run)."""
    clips = []
    for _ in range(2):
        r = rig.build_rig(synthetic.figure_from_avatar("synthetic", 600, seed=3), seed=3)
        clips.append(synthetic.make_clip(r, "Hello there, how are you?", "en+m3", size=32, framing="face", seed=5))
    a, b = clips
    assert a.frames.shape[0] == a.controls.num_frames > 20 and a.frames.std() > 0
    for name in ("frames", "masks", "audio"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.keypoints.keys() == b.keypoints.keys()
    for k in a.keypoints:
        np.testing.assert_array_equal(a.keypoints[k], b.keypoints[k], err_msg=k)
    for f in dataclasses.fields(a.controls):
        np.testing.assert_array_equal(getattr(a.controls, f.name), getattr(b.controls, f.name), err_msg=f.name)
    assert a.phonemes == b.phonemes
