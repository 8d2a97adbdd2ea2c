import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from avatar_jax import cli

ENV = dict(os.environ)


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "avatar_jax.cli", *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=600)


def test_help_lists_every_subcommand():
    res = run_cli("--help")
    assert res.returncode == 0
    for name in ["train", "render", "export", "reconstruct", "prepare", "bench", "eval", "demo", "vsd-compare",
                 "motion-study"]:
        assert name in res.stdout


def test_unknown_subcommand_is_one_line_without_traceback():
    res = run_cli("fly")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown command 'fly'" in lines[0]
    assert "Traceback" not in res.stderr


def test_config_errors_are_one_line():
    for args, needle in [
        (["demo", "--config.train.stepz=3"], "unknown config key 'train.stepz'"),
        (["demo", "--config.train.steps=abc"], "expects int"),
        (["demo", "--config", "configs/none.py"], "config file not found"),
        (["demo", "--config.mesh.data=3"], "impossible mesh shape"),
    ]:
        res = run_cli(*args)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], res.stderr
        assert "Traceback" not in res.stderr


def test_unbuilt_commands_say_so_and_fail():
    unbuilt = [name for name, c in cli.COMMANDS.items() if c.module is None]
    for name in unbuilt:
        res = run_cli(name)
        assert res.returncode == cli.EXIT_NOT_BUILT
        assert "not built yet" in res.stderr


@pytest.mark.slow
def test_motion_study_runs_end_to_end(tmp_path):
    """Issue 12's 3D measurement at a tiny size: speech -> teacher rig -> training -> held-out render -> mp4."""
    out = tmp_path / "motion_study"
    args = ["motion-study", "--config", "tiny", "--config.motion_study.train_steps=4",
            "--config.motion_study.train_sentences=1",
            "--config.motion_study.window_frames=8", "--config.motion_study.num_gaussians=600",
            "--config.motion_study.size=32", "--config.motion_study.held_out_sentences=2",
            "--config.motion_study.long_seconds=3",  # the long held-out run: 3 s, not the default 60 s
            "--config.model.num_particles=16", "--config.model.d_model=32", "--out", str(out)]
    assert cli.main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 4 and metrics["frames"] > 10
    for key in ("final_train_l1_m", "held_out_l1_model_m", "held_out_l1_standing_still_m"):
        assert np.isfinite(metrics[key]) and metrics[key] >= 0
    assert metrics["held_out_l1_standing_still_m"] > 1e-4  # the teacher really moves
    long = metrics["long_held_out"]
    assert 3.0 <= long["seconds"] < 20.0 and 1 <= long["sentences"] <= 2 and np.isfinite(long["drift"]["ratio"])
    # the teacher's own per-region displacement beside the model's (content vs drift); its lips move, its root not
    teacher = long["teacher_drift_regions"]
    assert set(teacher) == set(long["drift_regions"]) and teacher["mouth"]["first_mm"] > 0.5
    assert teacher["mouth"]["first_mm"] > 2 * teacher["body"]["first_mm"]
    # the expression in the head's frame: the jaw still moves there, all scores finite
    head = long["regions_head_frame"]
    assert set(head) == {"mouth", "eyes", "expression"} and head["mouth"]["rest_mm"] > 0.5
    assert all(np.isfinite(v["model_mm"]) and np.isfinite(v["constant_mm"]) for v in head.values())
    video = np.stack(list(iio.imiter(out / "talking.mp4")))
    assert video.shape == (metrics["frames"], 32, 64, 3)  # model | teacher side by side
    assert (out / "frames.png").stat().st_size > 0


def test_bench_se3_writes_json(tmp_path):
    assert cli.main(["bench", "se3", "--config.bench.quick=true", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "bench_se3.json").read_text())
    assert results["rows"] and all(r["scan_s"] > 0 for r in results["rows"])
    assert results["environment"]["jax"]


def test_bench_unknown_name():
    res = run_cli("bench", "warp")
    assert res.returncode == 2 and "unknown benchmark 'warp'" in res.stderr


@pytest.mark.parametrize("flag", ["--help"])
def test_subcommand_help(flag):
    res = run_cli("demo", flag)
    assert res.returncode == 0 and "--config" in res.stdout


@pytest.mark.parametrize("name", ["render", "model", "audio_io", "loader"])
def test_bench_commands_run_in_quick_mode(tmp_path, name):
    """Every benchmark command runs end to end and writes its JSON (smallest sizes; numbers not compared)."""
    assert cli.main(["bench", name, "--config.bench.quick=true", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / f"bench_{name}.json").read_text())
    assert results["environment"]["backend"] == "cpu"
