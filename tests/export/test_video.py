import imageio.v3 as iio
import numpy as np
import pytest

from avatar_jax.errors import InputError
from avatar_jax.export.video import write_video


def test_mp4_round_trip_frames_and_audio(tmp_path):
    t, h, w = 10, 32, 48
    frames = np.zeros((t, h, w, 3), np.float32)
    for k in range(t):  # a bright square moving right, one frame at a time
        frames[k, 8:24, 2 + 4 * k: 10 + 4 * k] = 1.0
    sr = 16000
    audio = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(sr * t / 25)) / sr).astype(np.float32)
    path = write_video(str(tmp_path / "out.mp4"), frames, fps=25, audio=audio)
    back = np.stack(list(iio.imiter(path)))
    assert back.shape == (t, h, w, 3)
    for k in range(t):  # the square's centre column is where we put it
        cols = np.where(back[k, 16, :, 0] > 128)[0]
        assert abs(cols.mean() - (6 + 4 * k - 0.5)) < 1.5
    import subprocess

    import imageio_ffmpeg

    info = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", path], capture_output=True, text=True).stderr
    assert "Audio: aac" in info and "Video: h264" in info
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".video-")]  # temp dir cleaned up


def test_bad_frames_are_rejected(tmp_path):
    with pytest.raises(InputError, match="even"):
        write_video(str(tmp_path / "x.mp4"), np.zeros((2, 31, 32, 3)), fps=25)
    with pytest.raises(InputError, match="T > 0"):
        write_video(str(tmp_path / "x.mp4"), np.zeros((0, 32, 32, 3)), fps=25)
    assert not (tmp_path / "x.mp4").exists()
