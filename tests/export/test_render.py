"""``avatar-jax render``: mp4 with video and audio of equal duration, camera and fps options, a .ply per
frame, text through the TTS, and one-line errors that leave no partial output behind."""

import math
import os

import numpy as np
import pytest
import soundfile

from avatar_jax import cli
from avatar_jax.errors import InputError
from avatar_jax.export.loader import load_bundle
from avatar_jax.export.video import stream_durations
from avatar_jax.gaussians.ply import read_ply
from avatar_jax.inference.cameras import camera_path
from avatar_jax.inference.render_video import render_video

from .conftest import RES, speech_like

CHUNK = ["--chunk", "5"]  # the chunk the other tests compile for


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


@pytest.mark.parametrize("camera,fps", [("orbit", None), ("novel", 30.0)])
def test_render_writes_mp4_with_audio_in_sync(tiny_bundle, wav, tmp_path, capsys, camera, fps):
    out = tmp_path / "video.mp4"
    args = ["render", "--bundle", tiny_bundle.path, "--audio", wav, "--out", str(out), "--camera", camera,
            "--no-progress", *CHUNK]
    if fps:
        args += ["--fps", str(fps)]
    assert cli.main(args) == 0, capsys.readouterr().err
    assert "frames/s" in capsys.readouterr().out
    d = stream_durations(str(out))
    rate = fps or 25.0
    assert d["video_frames"] == math.ceil(1.3 * rate - 1e-9)
    assert d["video"] == pytest.approx(d["video_frames"] / rate, abs=1e-3)
    assert abs(d["audio"] - d["video"]) <= 1.0 / rate  # equal within one frame
    assert _leftovers(tmp_path) == []


def test_ply_sequence_has_one_moving_3dgs_file_per_frame(tiny_bundle, wav, tmp_path, capsys):
    plys = tmp_path / "plys"
    args = ["render", "--bundle", tiny_bundle.path, "--audio", wav, "--out", str(tmp_path / "v.mp4"),
            "--ply-sequence", str(plys), "--no-progress", *CHUNK]
    assert cli.main(args) == 0, capsys.readouterr().err
    names = sorted(os.listdir(plys))
    assert names == [f"frame_{i:06d}.ply" for i in range(33)]
    first, last = read_ply(str(plys / names[0])), read_ply(str(plys / names[-1]))
    assert first["means"].shape == (300, 3) and first["sh"].shape == (300, 1, 3)
    assert np.abs(first["means"] - last["means"]).max() > 1e-3  # the avatar moved with the audio


def test_text_is_spoken_by_the_tts(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "hello.mp4"
    assert cli.main(["render", "--bundle", tiny_bundle.path, "--text", "Hello there.", "--out", str(out),
                     "--no-progress", *CHUNK]) == 0, capsys.readouterr().err
    d = stream_durations(str(out))
    assert d["video"] > 0.4 and abs(d["audio"] - d["video"]) <= 0.04


def _bad_cases(tiny_bundle, wav, tmp_path):
    (tmp_path / "notes.wav").write_text("these are not samples")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "manifest.json").write_text('{"format": "nerf"}')
    good = ["--bundle", tiny_bundle.path, "--audio", wav]
    out = str(tmp_path / "v.mp4")
    return [
        (["--bundle", str(tmp_path / "missing"), "--audio", wav, "--out", out], "no such bundle"),
        (["--bundle", str(tmp_path / "foreign"), "--audio", wav, "--out", out], "not an avatar-jax bundle"),
        (["--bundle", tiny_bundle.path, "--audio", str(tmp_path / "notes.wav"), "--out", out], "cannot decode"),
        (["--bundle", tiny_bundle.path, "--text", "   ", "--out", out], "--text is empty"),
        ([*good, "--out", str(tmp_path / "a_file" / "v.mp4")], "not a writable folder"),
        ([*good, "--out", str(tmp_path / "v.avi")], "must be an .mp4"),
        ([*good, "--out", out, "--resolution", "128x128"], "renders 64x64, not 128x128"),
        ([*good, "--out", out, "--elevation", "120"], "elevation"),
    ]


def test_bad_input_is_one_line_and_leaves_nothing(tiny_bundle, wav, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    for args, needle in _bad_cases(tiny_bundle, wav, work):
        before = sorted(os.listdir(work))
        assert cli.main(["render", *args, "--no-progress"]) == cli.EXIT_USAGE, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (args, err)
        assert sorted(os.listdir(work)) == before  # no video, no temp folder


def test_interrupted_render_leaves_no_partial_files(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle.path)
    path = camera_path(bundle.front, *RES)
    out, plys = tmp_path / "v.mp4", tmp_path / "plys"

    def interrupt(done):
        assert done == 5  # after the first batch: the mp4 and .ply files were half written
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_video(bundle, speech_like(1.3), str(out), path, chunk=5, ply_dir=str(plys), progress=False,
                     on_batch=interrupt)
    assert os.listdir(tmp_path) == []
    # a render that fails inside (an unrenderable frame) cleans up the same way
    with pytest.raises(InputError, match="NaN"):
        render_video(bundle, np.full(8000, np.nan, np.float32), str(out), path, chunk=5, progress=False)
    assert os.listdir(tmp_path) == []


def test_stereo_44k_file_is_resampled(tiny_bundle, tmp_path, capsys):
    stereo = np.stack([speech_like(0.5), speech_like(0.5, seed=1)], axis=1)
    src = tmp_path / "stereo.wav"
    from avatar_jax.audio.resample import resample

    soundfile.write(src, np.stack([resample(stereo[:, 0], 16000, 44100), resample(stereo[:, 1], 16000, 44100)], 1),
                    44100)
    out = tmp_path / "s.mp4"
    assert cli.main(["render", "--bundle", tiny_bundle.path, "--audio", str(src), "--out", str(out),
                     "--no-progress", *CHUNK]) == 0, capsys.readouterr().err
    assert stream_durations(str(out))["video_frames"] == math.ceil(0.5 * 25 - 1e-9)


def test_export_refuses_what_is_not_a_workdir(tmp_path, capsys):
    assert cli.main(["export", "--workdir", str(tmp_path / "nope"), "--out", str(tmp_path / "b")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a training workdir" in err[0]
    assert os.listdir(tmp_path) == []
