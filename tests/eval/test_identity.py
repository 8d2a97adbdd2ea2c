"""CSIM with dlib's face descriptor: two crops of one photo beat two different people.

Faces: ``skimage.data.astronaut()`` (Eileen Collins, NASA, public domain) and matplotlib's sample
``grace_hopper.jpg`` (Grace Hopper, U.S. Navy photograph, public domain); both ship in their wheels.
"""

import numpy as np
import pytest
from matplotlib import cbook
from skimage import data, transform

from avatar_jax.errors import AvatarJaxError, InputError
from avatar_jax.eval import identity


@pytest.fixture(scope="module")
def embedder():
    return identity.FaceEmbedder()


@pytest.fixture(scope="module")
def faces():
    import imageio.v3 as iio

    astronaut = data.astronaut()
    crop_a = astronaut[0:300, 80:380]
    crop_b = (transform.rescale(astronaut[30:270, 130:330], 0.8, channel_axis=-1) * 255).astype(np.uint8)
    hopper = iio.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return crop_a, crop_b, hopper


def test_same_person_more_similar_than_different_people(embedder, faces):
    crop_a, crop_b, hopper = faces
    same = identity.csim(crop_a, crop_b[None], embedder)
    other = identity.csim(crop_a, hopper[None], embedder)
    assert same.detection_rate == 1.0 and other.detection_rate == 1.0
    assert same.csim > 0.95
    assert same.csim > other.csim + 0.05
    frames = np.stack([crop_a, crop_a, np.zeros_like(crop_a)])
    res = identity.csim(crop_a, frames, embedder)  # identical frames, and one without a face
    np.testing.assert_allclose(res.per_frame[:2], 1.0, atol=1e-6)
    assert np.isnan(res.per_frame[2]) and res.detection_rate == pytest.approx(2 / 3)


def test_missing_models_and_bad_input(tmp_path, embedder, faces):
    with pytest.raises(InputError, match=identity.RECOGNITION_FILE):
        identity.FaceEmbedder(models_dir=str(tmp_path))
    with pytest.raises(InputError, match="no face found in the reference"):
        identity.csim(np.zeros((64, 64, 3), np.uint8), faces[0][None], embedder)


def test_missing_dlib_or_model_package_names_what_to_install(monkeypatch):
    import importlib.util
    import sys

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real_find_spec(name, *a))
    with pytest.raises(AvatarJaxError, match="face-recognition-models"):
        identity.FaceEmbedder()
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    with pytest.raises(AvatarJaxError, match="dlib-bin"):
        identity.FaceEmbedder()
