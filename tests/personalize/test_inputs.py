"""Inputs and outputs of `reconstruct`: photo layouts, group photos, the output folder, the quality gate."""

import os

import imageio.v3 as iio
import numpy as np
import pytest

from avatar_jax.cli import main
from avatar_jax.errors import InputError
from avatar_jax.personalize import detect, output_dir, photo_input, quality


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.mark.parametrize("case", ["not_an_image", "tiny", "no_person", "missing"])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, astronaut, case):
    out = tmp_path / "out"
    path = tmp_path / "photo.png"
    if case == "not_an_image":
        path.write_bytes(b"this is not a png")
        expect = "not a readable image"
    elif case == "tiny":
        iio.imwrite(path, astronaut[::16, ::16])
        expect = "too small"
    elif case == "no_person":
        sky = np.clip(np.random.default_rng(0).normal(150, 10, (256, 256, 3)), 0, 255).astype(np.uint8)
        iio.imwrite(path, sky)
        expect = "no person"
    else:
        expect = "no such image"
    code = main(["reconstruct", "--image", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expect in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".reconstruct-")]


def test_photo_layouts_become_rgb8():
    g = np.array([[0, 128], [255, 7]], np.uint8)
    assert np.array_equal(photo_input.to_rgb8(g), np.repeat(g[..., None], 3, -1))
    la = np.stack([g, np.array([[255, 0], [255, 255]], np.uint8)], -1)  # gray + alpha
    out = photo_input.to_rgb8(la)
    assert out[0, 1].tolist() == [255, 255, 255]  # transparent -> white
    assert out[1, 0].tolist() == [255, 255, 255] and out[0, 0].tolist() == [0, 0, 0]
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255
    rgba[0, 1, 3] = 128
    out = photo_input.to_rgb8(rgba)
    assert out[0, 0].tolist() == [200, 0, 0] and out[1, 1].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [round(200 * 128 / 255 + 127 / 255 * 255)] + [127] * 2
    assert photo_input.to_rgb8(np.full((2, 2), 65535, np.uint16)).max() == 255
    assert photo_input.to_rgb8(np.full((2, 2, 3), 0.5, np.float32))[0, 0, 0] == 128
    with pytest.raises(InputError, match="grayscale, RGB or RGBA"):
        photo_input.to_rgb8(np.zeros((4, 4, 5), np.uint8))


def test_output_folder_is_checked_first_and_replaced_whole(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    with pytest.raises(InputError, match="existing file"):
        output_dir.prepare(str(f), overwrite=True)
    assert f.read_text() == "keep me"
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(InputError, match="--overwrite"):
        output_dir.prepare(str(out), overwrite=False)
    staging = output_dir.prepare(str(out), overwrite=True)
    open(os.path.join(staging, "new.txt"), "w").write("new")
    output_dir.commit(staging, str(out))
    assert sorted(os.listdir(out)) == ["new.txt"]  # never a mix of old and new
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "out"]  # no staging or old folder left
    empty = tmp_path / "empty"
    empty.mkdir()
    staging = output_dir.prepare(str(empty), overwrite=False)
    output_dir.discard(staging)
    assert sorted(os.listdir(tmp_path)) == ["empty", "file.txt", "out"]


@pytest.mark.parametrize("case", ["file", "folder"])
def test_cli_refuses_an_existing_output_before_any_work(tmp_path, capsys, astronaut, case):
    image = tmp_path / "in.png"
    iio.imwrite(image, astronaut)
    out = tmp_path / "out"
    if case == "file":
        out.write_text("x")
    else:
        out.mkdir()
        (out / "report.json").write_text("{}")
    # MediaPipe is pointed at a missing interpreter: reaching detection would be a different error.
    code = main(["reconstruct", "--image", str(image), "--out", str(out),
                 "--config.reconstruct.mediapipe_python=/nonexistent/python"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert ("existing file" if case == "file" else "--overwrite") in err
    assert sorted(os.listdir(tmp_path)) == ["in.png", "out"]


def test_quality_gate_flags_a_poor_fit():
    good = dict(keypoint_error_fraction_of_height=0.009, psnr_in_mask_db=29.0, ssim_in_mask=0.9,
                seen_surface_share=0.4)
    assert quality.judge(good) == []
    bad = dict(good, keypoint_error_fraction_of_height=1.03, psnr_in_mask_db=float("nan"))
    warnings = quality.judge(bad)
    assert len(warnings) == 2 and "keypoint error" in warnings[0] and "psnr" in warnings[1]


def test_group_photo_uses_the_largest_person_or_the_one_asked_for(astronaut):
    from skimage.transform import resize

    small = (resize(astronaut[:, ::-1], (384, 384), anti_aliasing=True) * 255).astype(np.uint8)
    canvas = np.full((512, 512 + 384, 3), 255, np.uint8)
    canvas[:, :512] = astronaut
    canvas[128:, 512:] = small
    big = detect.detect(canvas)
    assert big.people == 2 and big.person == 0
    pts = big.keypoints[big.confidence > 0.5]
    assert len(pts) > 300 and pts[:, 0].max() < 512
    other = detect.detect(canvas, person=1)
    pts = other.keypoints[other.confidence > 0.5]
    assert len(pts) > 300 and pts[:, 0].min() > 512 and pts[:, 1].min() > 128
    assert other.mask[:, :400].max() < 0.5  # the mask holds only the chosen person
    with pytest.raises(InputError, match="asked for person 2 but found 2"):
        detect.detect(canvas, person=2)


def test_grayscale_photo_is_reconstructable(tmp_path, astronaut):
    path = tmp_path / "gray.png"
    iio.imwrite(path, astronaut.mean(-1).astype(np.uint8))
    det = detect.detect(photo_input.load_image(str(path)))
    assert (det.confidence > 0.5).sum() > 400
