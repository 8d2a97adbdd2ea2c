"""LPIPS: parity with the ``lpips`` package on a narrow random upstream network (golden files), the weight-file
layouts it accepts, and the missing-weights errors that name what to provide."""

import os

import numpy as np
import pytest

from avatar_jax.errors import InputError
from avatar_jax.eval import lpips as lpips_lib
from avatar_jax.eval.weights import MissingWeightsError

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "data", "lpips")
HEADS, TRUNK = os.path.join(GOLDEN, "alex_heads_narrow.pth"), os.path.join(GOLDEN, "alexnet_narrow.pth")


@pytest.fixture(scope="module")
def io():
    return dict(np.load(os.path.join(GOLDEN, "io.npz")))


@pytest.fixture(scope="module")
def model():
    return lpips_lib.load_lpips(HEADS, TRUNK, net="alex")


def test_lpips_matches_the_lpips_package(io, model):
    total, layers = lpips_lib.lpips(model, io["a"], io["b"], per_layer=True)
    assert total.shape == (3,) and layers.shape == (5, 3)
    np.testing.assert_allclose(layers, io["layers"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(total, io["total"], rtol=1e-4, atol=1e-6)
    assert abs(total[0]) < 1e-12 and (np.abs(total[1:]) > 1e-4).all()  # an identical pair is at distance 0
    floats = lpips_lib.lpips(model, io["a"] / 255.0, io["b"] / 255.0)  # [0,1] floats as uint8
    np.testing.assert_allclose(floats, total, rtol=1e-5, atol=1e-7)


def test_one_saved_lpips_module_holds_both_parts(io):
    """A whole saved ``LPIPS`` state dict (``net.slice{k}.{i}.*`` and ``lin*``) loads from one file."""
    one = lpips_lib.load_lpips(os.path.join(GOLDEN, "lpips_full.pth"))
    np.testing.assert_allclose(lpips_lib.lpips(one, io["a"], io["b"]), io["total"], rtol=1e-4, atol=1e-6)


def test_missing_and_wrong_weights_are_clear_errors(tmp_path, io, model):
    with pytest.raises(MissingWeightsError, match=r"LPIPS linear weights \(alex.pth\) not found.*lpips==0.1.4"):
        lpips_lib.load_lpips(str(tmp_path / "alex.pth"), TRUNK)
    with pytest.raises(MissingWeightsError, match=r"alexnet-owt-7be5be79.pth.*not found"):
        lpips_lib.load_lpips(HEADS, str(tmp_path / "alexnet-owt-7be5be79.pth"))
    with pytest.raises(InputError, match="holds only the LPIPS heads; also give the backbone"):
        lpips_lib.load_lpips(HEADS)
    with pytest.raises(InputError, match="backbone tensor 'features.0.weight' is missing"):
        lpips_lib.load_lpips(HEADS, HEADS)
    with pytest.raises(InputError, match="LPIPS net must be one of alex, vgg"):
        lpips_lib.load_lpips(HEADS, TRUNK, net="squeeze")
    with pytest.raises(InputError, match="at least 32x32"):
        lpips_lib.lpips(model, io["a"][:, :16, :16], io["b"][:, :16, :16])
    with pytest.raises(InputError, match="one shape"):
        lpips_lib.lpips(model, io["a"], io["b"][:2])


def test_report_scores_lpips_when_given(io, model):
    from avatar_jax.eval import report as report_lib

    clip = report_lib.EvalClip("c", io["a"], np.full(io["a"].shape[:3], 255, np.uint8),
                               np.zeros(3 * 640, np.float32), None)
    methods = {"noisy": [report_lib.MethodOutput(io["b"] / 255.0)]}
    rep = report_lib.score_methods([clip], methods, report_lib.Options(csim=False, lpips=model))
    assert rep["methods"]["noisy"]["lpips"] == pytest.approx(float(np.mean(io["total"])), rel=1e-4)
    assert abs(rep["methods"][report_lib.GROUND_TRUTH]["lpips"]) < 1e-12 and "lpips" not in rep["missing"]
    assert "lpips ↓" in report_lib.markdown(rep)
    without = report_lib.score_methods([clip], methods, report_lib.Options(csim=False))
    assert "lpips" not in without["methods"]["noisy"] and "--lpips alex.pth" in without["missing"]["lpips"]
