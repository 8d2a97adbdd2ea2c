"""SyncNet port: parity with syncnet-python on a narrow random upstream model (golden files), the legacy
torch.save reader, MFCCs equal to python_speech_features, and the missing-checkpoint error."""

import os
import pickle

import numpy as np
import pytest

from avatar_jax.errors import InputError
from avatar_jax.eval import mfcc as mfcc_lib
from avatar_jax.eval import syncnet
from avatar_jax.eval.torch_legacy import load_state_dict
from avatar_jax.eval.weights import MissingWeightsError

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "data", "syncnet")


@pytest.fixture(scope="module")
def golden():
    io = dict(np.load(os.path.join(GOLDEN, "io.npz")))
    frames = np.repeat(np.repeat(io["frames_low"], 16, axis=1), 16, axis=2)
    audio = io["audio_int16"].astype(np.float64) / 32767.0
    return io, frames, audio


@pytest.fixture(scope="module")
def model():
    return syncnet.load_syncnet(os.path.join(GOLDEN, "syncnet_v2.model"))


def test_legacy_state_dict_is_read_without_torch():
    state = load_state_dict(os.path.join(GOLDEN, "syncnet_v2.model"))
    assert state["netcnnaud.0.weight"].shape == (4, 1, 3, 3)
    assert state["netcnnlip.0.weight"].shape == (6, 3, 5, 7, 7)
    assert state["netfclip.3.weight"].shape == (16, 32)
    assert all(v.dtype == np.float32 for v in state.values())
    spec = syncnet.spec_from_state(state)
    assert spec.audio_channels == (4, 12, 24, 16, 16, 32) and spec.lip_channels == (6, 16, 16, 16, 16, 32)


def test_mfcc_equals_python_speech_features(golden):
    io, _, audio = golden
    ours = mfcc_lib.mfcc(mfcc_lib.int16_scale(audio))
    np.testing.assert_array_equal(mfcc_lib.int16_scale(audio), io["audio_int16"])
    assert ours.shape == io["mfcc"].shape == (1 + int(np.ceil((len(audio) - 400) / 160)), 13)
    np.testing.assert_allclose(ours, io["mfcc"], rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def feats(golden, model):
    _, frames, audio = golden
    return syncnet.features(model, frames, audio, batch=13)


def test_tower_embeddings_match_upstream(golden, feats):
    io, _, _ = golden
    lip, aud = feats
    assert lip.shape == io["lip"].shape == (25, 16)
    scale = np.abs(io["lip"]).max()
    np.testing.assert_allclose(lip, io["lip"], rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(aud, io["aud"], rtol=1e-4, atol=1e-4 * np.abs(io["aud"]).max())


def test_sync_scores_match_upstream_evaluate(golden, feats):
    io, _, _ = golden
    scores = syncnet.scores_from_features(*feats)
    np.testing.assert_allclose(scores.mean_dists, io["mdist"], rtol=1e-4)
    assert scores.offset == int(io["offset"])
    assert scores.min_dist == pytest.approx(float(io["min_dist"]), rel=1e-4)
    # the confidence is a difference of two distances: 1e-4 of their size
    assert abs(scores.confidence - float(io["confidence"])) < 1e-4 * float(io["min_dist"])
    assert float(io["confidence"]) > 0.1  # a non-degenerate case (the minimum is not the median)


def test_scores_from_features_recovers_a_known_offset():
    rng = np.random.default_rng(0)
    lip = rng.standard_normal((40, 8))
    for shift in (-3, 0, 5):
        aud = np.roll(lip, shift, axis=0) + 0.01 * rng.standard_normal(lip.shape)
        s = syncnet.scores_from_features(lip, aud)
        assert s.offset == -shift
        assert s.min_dist < 0.5 and s.confidence > 1.5  # (frames shifted past the ends meet zero padding)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(MissingWeightsError, match="syncnet_v2.model"):
        syncnet.load_syncnet(tmp_path / "nope.model")
    with pytest.raises(MissingWeightsError, match="syncnet_v2.model"):
        syncnet.load_syncnet(None)


def test_foreign_files_are_refused(tmp_path):
    (tmp_path / "x.model").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(InputError, match="not a PyTorch file"):
        load_state_dict(tmp_path / "x.model")
    evil = tmp_path / "evil.model"
    with open(evil, "wb") as f:
        for header in (syncnet_magic(), 1001, {"little_endian": True}):
            pickle.dump(header, f)
        pickle.dump(os.system, f)
    with pytest.raises(InputError, match="refusing to unpickle"):
        load_state_dict(evil)


def syncnet_magic():
    from avatar_jax.eval.torch_legacy import MAGIC_NUMBER

    return MAGIC_NUMBER
