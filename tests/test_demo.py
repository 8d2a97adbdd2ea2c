"""``avatar-jax demo`` end to end at a tiny size: photo -> reconstruct -> clips -> train -> score -> export ->
render, every output checked for shape and content; then resume, refusal and bad input (cheap, no compile)."""

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from avatar_jax import cli
from avatar_jax.data import corpus
from avatar_jax.demo import PANELS, STAGES, compose, fit_panel, frame_strip
from avatar_jax.export.video import stream_durations

# Tiny everything: a 600-Gaussian reconstruction in a few steps, one training sentence, two held out, 32 px frames,
# two steps.
TINY = ["demo.num_gaussians=600", "demo.body_steps=20", "demo.photo_steps=2", "demo.work_size=96",
        "demo.crop_size=0", "reconstruct.turntable_views=2", "reconstruct.turntable_size=48", "demo.size=32",
        "demo.video_size=32", "demo.sentences=1", "demo.held_out_sentences=2", 'demo.voices=("en-us",)',
        "demo.train_steps=2", "demo.batch_size=2", "train.seq_len=4", "train.checkpoint_every=0",
        "model.num_particles=16", "model.d_model=32", "mesh.data=1", "mesh.model=-1"]


def demo_args(out, *extra):
    return ["demo", "--config", "tiny", *[f"--config.{o}" for o in TINY], "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    # As a user runs it: a process of its own. (Its train-step compile once crashed inside a CI worker; the
    # cause was the worker's accumulated code mappings, see tests/conftest.py, not the demo.)
    out = tmp_path_factory.mktemp("demo") / "out"
    env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}  # nothing else compiles the demo's programs
    res = subprocess.run([sys.executable, "-m", "avatar_jax.cli", *demo_args(out)], capture_output=True, text=True,
                         timeout=1800, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.mark.slow
def test_demo_writes_every_output(demo_run):
    out = demo_run
    metrics = json.loads((out / "metrics.json").read_text())
    held = metrics["held_out"]
    assert held["voice"] == "en-us+f3" and held["clips"] == 2 and len(set(held["texts"])) == 2
    # the held-out speech is fixed (demo.held_out_offset), whatever the number of training sentences
    assert held["texts"] == [text for _, text in corpus.sentences(2, offset=12)]
    assert len(held["frames"]) == 2 and min(held["frames"]) > 10 and held["frames_total"] == sum(held["frames"])
    assert held["size"] == 32
    video_frames = metrics["video"]["frames"]
    assert metrics["video"]["text"] == held["texts"][0] and video_frames == held["frames"][0]  # the same speech
    for name in ("trained", "untrained"):
        assert 10.0 < held[name]["psnr_mask_db"] < 60.0  # a real render against the teacher, not a blank frame
        assert -1.0 <= held[name]["mouth_corr"] <= 1.0
    assert set(metrics["beats_untrained"]) == {"psnr", "mouth_corr"}
    assert set(metrics["stage_seconds"]) == set(STAGES) and all(v > 0 for v in metrics["stage_seconds"].values())
    assert metrics["settings"]["train_steps"] == 2 and metrics["settings"]["reconstruct_gaussians"] == 600

    # The mp4: photo | teacher | front | novel, 32 px panels under a label row, with audio as long as the video.
    video = np.stack(list(iio.imiter(out / "demo.mp4")))
    assert video.shape[0] == video_frames and video.shape[2] == 4 * 32 and video.shape[1] > 32
    durations = stream_durations(str(out / "demo.mp4"))
    assert abs(durations["audio"] - durations["video"]) <= 1 / 25 + 1e-3
    assert durations["video_frames"] == video_frames
    body = video[:, -32:].astype(np.float64)
    photo, teacher, front, novel = (body[:, :, k * 32:(k + 1) * 32] for k in range(4))
    assert np.abs(photo[0] - photo[-1]).max() < 12  # the photo panel stands still (up to H.264 noise)
    assert np.abs(teacher[1:] - teacher[:-1]).mean() > 0.05  # the teacher talks
    assert np.abs(front - novel).mean() > 3  # the novel view is another view
    assert np.abs(front - 235).mean() > 5  # the avatar is there, not the backdrop alone

    strip = iio.imread(out / "frames.png")
    assert strip.ndim == 3 and strip.shape[1] == 4 * 32 and strip.shape[0] > 4 * 32
    for sub in ("avatar/avatar.npz", "avatar/report.json", "data/index.json", "held_out/index.json",
                "held_out_video/index.json", "run/summary.json", "bundle/manifest.json", "photo.png", "demo.json"):
        assert (out / sub).exists(), sub


@pytest.mark.slow
def test_demo_rerun_reuses_stages_and_refuses_another_run(demo_run, capsys):
    before = json.loads((demo_run / "demo.json").read_text())
    mtime = (demo_run / "demo.mp4").stat().st_mtime_ns
    assert cli.main(demo_args(demo_run)) == 0  # same config and photo: every stage reused, nothing recompiled
    printed = capsys.readouterr().out
    assert printed.count("reused") >= len(STAGES)
    assert json.loads((demo_run / "demo.json").read_text()) == before
    assert (demo_run / "demo.mp4").stat().st_mtime_ns == mtime
    # Another config into the same folder: refused, nothing touched.
    assert cli.main(demo_args(demo_run, "--config.demo.train_steps=3")) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "holds a demo of another config or photo" in err and "--overwrite" in err
    assert (demo_run / "demo.mp4").stat().st_mtime_ns == mtime


def test_demo_refuses_foreign_folder_and_bad_input(tmp_path, capsys):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("keep me")
    assert cli.main(demo_args(foreign)) == cli.EXIT_USAGE
    assert "files that are not a demo run" in capsys.readouterr().err
    assert (foreign / "thesis.txt").read_text() == "keep me"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert cli.main(demo_args(a_file)) == cli.EXIT_USAGE
    assert "is a file" in capsys.readouterr().err
    assert cli.main(demo_args(tmp_path / "o", "--image", str(tmp_path / "missing.png"))) == cli.EXIT_USAGE
    assert "no such image file" in capsys.readouterr().err
    assert cli.main(demo_args(tmp_path / "o", "--config.demo.held_out_voice=en-us")) == cli.EXIT_USAGE
    assert "also a training voice" in capsys.readouterr().err
    assert cli.main(demo_args(tmp_path / "o", "--config.demo.held_out_sentences=0")) == cli.EXIT_USAGE
    assert "held_out_sentences must be >= 1" in capsys.readouterr().err
    assert cli.main(demo_args(tmp_path / "o", "--config.demo.size=33")) == cli.EXIT_USAGE
    assert "must be even" in capsys.readouterr().err
    assert cli.main(demo_args(tmp_path / "o", "--config.demo.sentences=3", "--config.demo.held_out_offset=2")) \
        == cli.EXIT_USAGE
    assert "the held-out sentences would be training sentences" in capsys.readouterr().err
    # a pretrained speech encoder whose folder is missing: refused before any stage, nothing written
    nowhere = tmp_path / "wav2vec2-base"
    assert cli.main(demo_args(tmp_path / "o", "--config.audio.encoder=wav2vec2",
                              f"--config.audio.checkpoint_dir={nowhere}")) == cli.EXIT_USAGE
    assert f"checkpoint directory '{nowhere}' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_compose_and_strip_layout():
    rng = np.random.default_rng(0)
    photo = fit_panel(rng.integers(0, 255, (60, 30, 3), dtype=np.uint8), 32)
    assert photo.shape == (32, 32, 3) and (photo[:, :4] == 255).all()  # tall photo: white bars at the sides
    views = [rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8) for _ in range(3)]
    video = compose(photo, *views)
    label_h = video.shape[1] - 32
    assert video.shape == (5, label_h + 32, 128, 3) and label_h > 0
    np.testing.assert_array_equal(video[3, label_h:, 32:64], views[0][3])
    np.testing.assert_array_equal(video[3, label_h:, 96:], views[2][3])
    assert (video[:, :label_h] < 128).any()  # the panel names are drawn
    strip = frame_strip(video, count=3)
    assert strip.shape == (label_h + 3 * 32, 128, 3)
    np.testing.assert_array_equal(strip[label_h + 64:, 64:96], views[1][4])  # last row: the last frame
    assert len(PANELS) == 4
