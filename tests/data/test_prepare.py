import json
import os
import shutil

import numpy as np
import pytest

from avatar_jax.data import crop as crop_lib
from avatar_jax.data import index, loader, prepare, records, schema, video

from .media import FLASHES, RedDiscDetector, burst_energy, disc_centre, make_mp4, transcode

OPTS = prepare.PrepareOptions(size=64, min_seconds=1.0, clip_seconds=10.0)


def _red_centroid(frame):
    f = frame.astype(np.int16)
    ys, xs = np.nonzero((f[..., 0] > 150) & (f[..., 1] < 100) & (f[..., 2] < 100))
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])


def test_round_trip_frames_audio_and_keypoints_stay_aligned(tmp_path):
    """A generated mp4 (moving red disc, flashes, tone with bursts at the flash frames) is prepared with
    an injected detector and read back through the records and the grain loader."""
    videos, out = tmp_path / "videos", tmp_path / "out"
    (videos / "anna").mkdir(parents=True)
    make_mp4(videos / "anna" / "talk.mp4", 75)
    (videos / "anna" / "talk.txt").write_text("hello there")
    report = prepare.prepare_folder(str(videos), str(out), OPTS, RedDiscDetector(), progress=False)
    assert report["prepared"] == 1 and report["clips"] == 1, report
    reader = records.ClipReader(str(out), "anna__talk_000")
    meta = reader.meta
    assert meta.num_frames == 75 and meta.subject_id == "anna" and meta.transcript == "hello there"
    clip = reader.window(0, 75)
    assert clip["frame"].shape == (75, 64, 64, 3) and clip["audio"].shape == (75 * 640,)
    crop = crop_lib.Crop(**meta.extra["crop"])
    # keypoints: detector output mapped through the crop lands on the disc in the stored frames, and on
    # the disc's known trajectory
    for t in range(0, 75, 7):
        stored = _red_centroid(clip["frame"][t])
        np.testing.assert_allclose(clip["body"][t, schema.BODY_NOSE], stored, atol=0.8)
        np.testing.assert_allclose(crop.points(np.array(disc_centre(t, 75))), stored, atol=1.0)
    # the person mask covers the disc
    assert clip["mask"][10][tuple(np.round(clip["body"][10, 0, ::-1]).astype(int))] > 200
    # frames and audio: the flash frames are the brightest, and their audio spans hold the bursts
    brightness = clip["frame"].mean((1, 2, 3))
    assert sorted(np.argsort(brightness)[-2:].tolist()) == list(FLASHES)
    energy = np.array([burst_energy(clip["audio"][t * 640:(t + 1) * 640]) for t in range(75)])
    assert sorted(np.argsort(energy)[-2:].tolist()) == list(FLASHES)
    assert energy[list(FLASHES)].min() > 10 * np.median(energy)
    # camera: the stored K is the crop of the assumed pinhole
    K = np.array(meta.K)
    assert K[0, 0] == pytest.approx(0.5 * 72 / np.tan(np.radians(25.0)) * crop.scale, rel=1e-5)
    # the loader gives the same alignment inside a window that contains a flash
    source = loader.WindowSource(str(out), "all", seq_len=10, stride=10)
    item = source[2]  # frames 20..29
    assert int(item["start"]) == 20 and item["frame"][0].mean() == brightness[20]
    assert np.argmax([burst_energy(item["audio"][k * 640:(k + 1) * 640]) for k in range(10)]) == 0


def test_formats_frame_rate_and_resume(tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "out"
    (videos / "ben").mkdir(parents=True)
    make_mp4(videos / "ben" / "a.mp4", 40, fps=30.0)  # 30 fps -> re-timed to 25
    transcode(videos / "ben" / "a.mp4", videos / "ben" / "b.webm", ["-c:v", "libvpx-vp9", "-c:a", "libopus"])
    transcode(videos / "ben" / "a.mp4", videos / "ben" / "c.mov", ["-c", "copy"])
    # variable frame rate: the first 20 frames at 30 fps, the rest at 12 fps (1.33 s + 1.67 s)
    transcode(videos / "ben" / "a.mp4", videos / "ben" / "d.mp4",
              ["-vf", "setpts='if(lt(N,20),N/30,20/30+(N-20)/12)/TB'", "-fps_mode", "vfr", "-c:a", "copy"])
    report = prepare.prepare_folder(str(videos), str(out), OPTS, RedDiscDetector(), progress=False)
    assert report["prepared"] == 4 and report["clips"] == 4, report
    by = {r["source"]: r for r in report["results"]}
    assert any("resampled from 30 to 25 fps" in n for n in by[os.path.join("ben", "a.mp4")]["notes"])
    assert any("variable frame rate" in n for n in by[os.path.join("ben", "d.mp4")]["notes"])
    frames = {c["clip_id"]: c["num_frames"] for c in index.load_index(str(out))["clips"]}
    assert {frames[c] for c in ("ben__a_000", "ben__b_000", "ben__c_000")} <= {33, 34}  # 1.33 s at 25 fps
    assert 55 <= frames["ben__d_000"] <= 76  # 16.7/30 + 20/12 s of video, constant 25 fps out
    # resume: nothing is redone; a deleted clip is redone; --force redoes all
    mtime = os.path.getmtime(schema.clip_paths(str(out), "ben__b_000")[0])
    os.remove(schema.clip_paths(str(out), "ben__c_000")[1])
    again = prepare.prepare_folder(str(videos), str(out), OPTS, RedDiscDetector(), progress=False)
    assert again["skipped"] == 3 and again["prepared"] == 1 and again["clips"] == 4
    assert os.path.getmtime(schema.clip_paths(str(out), "ben__b_000")[0]) == mtime


def test_bad_inputs_are_reported_and_skipped(tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "out"
    (videos / "cat").mkdir(parents=True)
    make_mp4(videos / "cat" / "good.mp4", 30)
    make_mp4(videos / "cat" / "silent_film.mp4", 30, audio=False)
    make_mp4(videos / "cat" / "empty_room.mp4", 30, person=False)
    make_mp4(videos / "cat" / "blink.mp4", 10)  # 0.4 s < min_seconds
    data = (videos / "cat" / "good.mp4").read_bytes()
    (videos / "cat" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (videos / "cat" / "garbage.mov").write_bytes(np.random.default_rng(0).bytes(5000))
    (videos / "cat" / "zero.webm").write_bytes(b"")
    report = prepare.prepare_folder(str(videos), str(out), OPTS, RedDiscDetector(), progress=False)
    reasons = {os.path.basename(r["source"]): r["reason"] for r in report["results"] if r["status"] == "rejected"}
    assert report["prepared"] == 1 and report["clips"] == 1 and report["rejected"] == 6, reasons
    assert reasons["silent_film.mp4"] == "no audio track"
    assert reasons["empty_room.mp4"].startswith("no person")
    assert reasons["blink.mp4"].startswith("too short")
    assert "no decodable video stream" in reasons["truncated.mp4"]
    assert "no decodable video stream" in reasons["garbage.mov"]
    assert "empty file" in reasons["zero.webm"]
    assert [c["clip_id"] for c in index.load_index(str(out))["clips"]] == ["cat__good_000"]
    saved = json.loads((out / "prepare_report.json").read_text())
    assert saved["rejected"] == 6
    assert sorted(os.listdir(out / "clips")) == ["cat__good_000.array_record", "cat__good_000.json"]


def test_corrupt_stream_mid_file_is_rejected_without_leftovers(tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    make_mp4(tmp_path / "src.mp4", 60)
    transcode(tmp_path / "src.mp4", videos / "broken.mp4", ["-c", "copy", "-movflags", "+faststart"])
    data = bytearray((videos / "broken.mp4").read_bytes())
    data[len(data) // 3:] = bytes(len(data) - len(data) // 3)  # header intact, media data zeroed
    (videos / "broken.mp4").write_bytes(bytes(data))
    shutil.copy(tmp_path / "src.mp4", videos / "fine.mp4")
    report = prepare.prepare_folder(str(videos), str(out), OPTS, RedDiscDetector(), progress=False)
    by = {r["source"]: r for r in report["results"]}
    assert by["fine.mp4"]["status"] == "ok"
    broken = by["broken.mp4"]
    # either ffmpeg fails on the stream, or too few frames with the person survive: never a crash
    assert broken["status"] == "rejected" and broken["reason"], broken


def test_probe_reports_streams(tmp_path):
    make_mp4(tmp_path / "v.mp4", 25, audio=False)
    info = video.probe(str(tmp_path / "v.mp4"))
    assert (info.width, info.height, info.fps, info.has_audio) == (96, 72, 25.0, False)
    assert not info.variable_rate


def test_cli_prepare_reports_bad_arguments_in_one_line(tmp_path, capsys):
    from avatar_jax.cli import main

    assert main(["prepare", "--videos", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "must be a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["prepare", "--videos", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no videos" in capsys.readouterr().err
    assert main(["prepare", "--out", str(tmp_path / "o")]) == 2
