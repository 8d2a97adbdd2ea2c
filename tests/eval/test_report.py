"""The Table-2-style report on known cases (exact PSNR of a known error, a known mouth lag, identical
frames), its files, the SyncNet face crop, and the eval command's input errors."""

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from avatar_jax.eval import report as report_lib
from avatar_jax.eval.report import EvalClip, MethodOutput

T, H, W, SR, FPS = 40, 24, 20, 16000, 25.0


def _face(opening: np.ndarray) -> np.ndarray:
    """Face-mesh landmarks (T,478,2) whose inner lips (13 / 14) open by ``opening`` and mouth width is 20 px."""
    face = np.zeros((len(opening), 478, 2), np.float32) + np.array([10.0, 12.0], np.float32)
    face[:, 61, 0], face[:, 291, 0] = 0.0, 20.0
    face[:, 14, 1] = 12.0 + opening
    return face


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    env = 0.05 + np.abs(np.sin(np.arange(T) * 0.7)) * rng.uniform(0.2, 1.0, T)  # syllable-like loudness
    audio = np.concatenate([e * rng.standard_normal(SR // int(FPS)) for e in env]).astype(np.float32)
    frames = rng.integers(40, 200, size=(T, H, W, 3), dtype=np.uint8)
    mask = np.zeros((T, H, W), np.uint8)
    mask[:, 4:20, 5:15] = 255
    clip = EvalClip("c0", frames, mask, audio, _face(3.0 * env), FPS)
    shifted = frames / 255.0 + 0.1  # error 0.1 everywhere: PSNR 20 dB in the mask
    late = np.concatenate([np.full(2, env[0]), env[:-2]])  # mouth follows the audio 2 frames late
    methods = {
        "offset colours, mouth 2 frames late": [MethodOutput(shifted, _face(3.0 * late))],
        "still": [MethodOutput(np.repeat(frames[:1] / 255.0, T, 0), _face(np.zeros(T)))],
    }
    return clip, methods


def test_known_errors_and_lag_are_measured(case):
    clip, methods = case
    rep = report_lib.score_methods([clip], methods, report_lib.Options(csim=False))
    gt = rep["methods"][report_lib.GROUND_TRUTH]
    assert gt["ssim"] == pytest.approx(1.0, abs=1e-6) and gt["psnr"] is None  # identical: infinite PSNR
    assert gt["sync_lag"] == 0 and gt["sync_corr"] > 0.99  # (the RMS of noise follows its envelope closely)
    off = rep["methods"]["offset colours, mouth 2 frames late"]
    assert off["psnr"] == pytest.approx(20.0, abs=1e-3)
    assert off["sync_lag"] == 2 and off["sync_corr"] > 0.99
    still = rep["methods"]["still"]
    assert still["psnr"] < off["psnr"] or still["ssim"] < 1.0
    assert still["sync_corr"] == 0.0  # a mouth that never moves does not follow the speech
    assert "sync_c" in rep["missing"] and "fid" in rep["missing"] and "fvd" in rep["missing"]
    assert rep["per_clip"]["still"][0]["frames"] == T


def test_report_files(case, tmp_path):
    clip, methods = case
    rep = report_lib.score_methods([clip, clip], methods | {k: v * 2 for k, v in methods.items()},
                                   report_lib.Options(csim=False))
    paths = report_lib.write_report(str(tmp_path), rep, [clip, clip], {k: v * 2 for k, v in methods.items()})
    loaded = json.loads(open(paths["json"]).read())
    assert loaded["frames"] == 2 * T and set(loaded["methods"]) == {report_lib.GROUND_TRUTH, *methods}
    md = open(paths["markdown"]).read()
    assert "| still |" in md and "psnr ↑" in md and "Not measured" in md
    sheet = iio.imread(paths["still"])
    assert sheet.shape == (2 * H, 6 * W, 3) and sheet.dtype == np.uint8  # one row of 6 frames per clip
    assert os.path.exists(os.path.join(tmp_path, "frames_ground_truth.png"))


def test_face_box_and_crop():
    face = np.zeros((3, 478, 2)) + [[50.0, 40.0]]
    face[:, 0] = [40.0, 30.0]
    face[:, 1] = [60.0, 50.0]
    top, left, size = report_lib.face_box(face, 100, 120, scale=1.5)
    assert (top, left, size) == (25, 35, 30)
    frames = np.zeros((3, 100, 120, 3), np.uint8)
    frames[:, top : top + size, left : left + size] = 200
    crop = report_lib.crop_resize(frames, (top, left, size), out=224)
    assert crop.shape == (3, 224, 224, 3) and crop.min() == 200


def test_eval_command_input_errors_are_one_line(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for args, needle in [
        (["--workdir", str(tmp_path)], "is not a training workdir"),
        (["--workdir", str(tmp_path), "--compare", "nameonly"], "--compare takes NAME=WORKDIR"),
        (["--workdir", str(tmp_path), "--syncnet", str(tmp_path / "s.model")], "syncnet_v2.model"),
        (["--workdir", str(tmp_path), "--i3d", str(tmp_path / "i.pt")], "i3d_pretrained_400.pt"),
        (["--workdir", str(tmp_path), "--lpips", str(tmp_path / "alex.pth")], "LPIPS linear weights (alex.pth)"),
    ]:
        res = subprocess.run([sys.executable, "-m", "avatar_jax.cli", "eval", *args], capture_output=True,
                             text=True, env=env, timeout=300)
        assert res.returncode == 2, res.stderr
        assert needle in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
