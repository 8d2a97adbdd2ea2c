"""The VSD comparison's logic (no training): seed and weight lists, the weight picked on validation only, the
per-seed summary, the seed loop's runs and record, and the validation split kept apart from train and test."""

import json
import os

import pytest

from avatar_jax.config import load_config
from avatar_jax.errors import InputError
from avatar_jax.eval.ablations import Row, row_config
from avatar_jax.train import vsd_compare as vc


def _base():
    # batch 8: the tests run on 8 simulated devices, over which the data axis spreads
    return load_config("configs/tiny.py:face", [*vc.COMPARE_DEFAULTS, "vsd.teacher=T", "train.batch_size=8"])


def _row(seed, weight, val, test, psnr=20.0):
    return {"seed": seed, "weight": weight, "val": {"mouth_corr": val}, "test": {"mouth_corr": test, "psnr_mask": psnr}}


def test_parse_list_reads_seeds_and_weights_and_refuses_bad_ones():
    assert vc.parse_list("0,1,2", int, "seeds") == [0, 1, 2]
    assert vc.parse_list("3, 10", float, "weights") == [3.0, 10.0]
    for text, kind in (("0,x", int), ("", int), ("1,1", int), ("0,10", float), ("-1", float)):
        with pytest.raises(InputError):
            vc.parse_list(text, kind, "what")


def test_run_overrides_set_the_student_and_teacher_seed_and_the_weight():
    base = _base()
    c = row_config(base, Row("x", vc.row_overrides(2, 10.0)))
    assert (c.seed, c.vsd.seed, c.loss.vsd, c.loss.image) == (2, 2, 10.0, 0.0)
    c = row_config(base, Row("x", vc.row_overrides(1, None)))
    assert (c.seed, c.vsd.seed, c.loss.vsd) == (1, 1, 0.0)
    assert [vc.run_slug(w) for w in (None, 10.0, 0.5)] == ["without_vsd", "vsd_w10", "vsd_w0.5"]


def test_the_weight_is_chosen_on_validation_never_on_test():
    # weight 3 is better on validation (mean 0.5 vs 0.4), weight 10 on test: 3 must be chosen
    rows = [_row(s, None, 0.3, 0.3) for s in (0, 1)]
    rows += [_row(0, 3.0, 0.6, 0.1), _row(1, 3.0, 0.4, 0.2), _row(0, 10.0, 0.5, 0.9), _row(1, 10.0, 0.3, 0.9)]
    best, means = vc.select_weight(rows, [3.0, 10.0])
    assert best == 3.0 and means == pytest.approx({"3": 0.5, "10": 0.4})
    # a tie goes to the smaller weight
    tie = [_row(0, 3.0, 0.5, 0.0), _row(0, 10.0, 0.5, 0.0)]
    assert vc.select_weight(tie, [10.0, 3.0])[0] == 3.0
    # a weight missing a seed's validation score cannot be compared
    with pytest.raises(InputError, match="1 of 2 seeds"):
        vc.select_weight(rows[:-1], [3.0, 10.0])


def test_summary_reports_mean_spread_and_the_paired_difference_over_the_same_seeds():
    rows = [_row(0, None, 0.2, 0.40, 22.0), _row(1, None, 0.2, 0.50, 23.0), _row(2, None, 0.2, 0.30, 21.0),
            _row(0, 10.0, 0.5, 0.50, 23.0), _row(1, 10.0, 0.5, 0.40, 22.0), _row(2, 10.0, 0.5, 0.60, 24.0)]
    s = vc.summarise(rows, [10.0])
    assert s["chosen_weight"] == 10.0 and s["seeds"] == [0, 1, 2]
    t = s["test_mouth_corr"]
    assert t[vc.WITHOUT_VSD]["mean"] == pytest.approx(0.4) and t[vc.WITHOUT_VSD]["std"] == pytest.approx(0.1)
    assert t[vc.WITH_VSD]["mean"] == pytest.approx(0.5) and t[vc.WITH_VSD]["std"] == pytest.approx(0.1)
    d = t["with - w/o"]  # +0.1, -0.1, +0.3
    assert (d["mean"], d["min"], d["max"], d["n"]) == pytest.approx((0.1, -0.1, 0.3, 3))
    assert d["std"] == pytest.approx(0.2)
    assert s["test_psnr_mask"]["with - w/o"]["mean"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="lack the row without VSD"):
        vc.summarise(rows[1:], [10.0])


def test_compare_runs_every_seed_without_then_with_each_weight_and_records_them(tmp_path, monkeypatch):
    base = _base()
    calls = []
    val = {(0, None): 0.1, (0, 3.0): 0.5, (0, 10.0): 0.2, (1, None): 0.1, (1, 3.0): 0.3, (1, 10.0): 0.2}

    def fake_run(config, workdir, **kw):
        w = float(config.loss.vsd) or None
        calls.append((config.seed, config.vsd.seed, w, os.path.relpath(workdir, tmp_path)))
        v = val[(config.seed, w)]
        return {"workdir": workdir, "step": 60, "test": {"mouth_corr": v + 0.05, "psnr_mask": 20.0},
                "val": {"mouth_corr": v}}

    monkeypatch.setattr(vc, "_run_row", fake_run)
    monkeypatch.setattr(vc, "_finished_teacher", lambda d: {"step": 7})
    res = vc.compare(base, str(tmp_path), seeds=[0, 1], weights=[3.0, 10.0], data_root="D", val_root="V",
                     log=lambda *_: None)
    assert calls == [(0, 0, None, "runs/seed0/without_vsd"), (0, 0, 3.0, "runs/seed0/vsd_w3"),
                     (0, 0, 10.0, "runs/seed0/vsd_w10"), (1, 1, None, "runs/seed1/without_vsd"),
                     (1, 1, 3.0, "runs/seed1/vsd_w3"), (1, 1, 10.0, "runs/seed1/vsd_w10")]
    saved = json.load(open(tmp_path / vc.COMPARE_FILE))
    assert saved["teacher_step"] == 7 and len(saved["rows"]) == 6
    assert saved["summary"]["chosen_weight"] == res["summary"]["chosen_weight"] == 3.0
    assert saved["summary"]["test_mouth_corr"]["with - w/o"]["mean"] == pytest.approx(0.3)


def test_the_validation_clips_are_neither_training_nor_test_speech():
    t = load_config("configs/teacher_tiny.py")
    assert vc.VAL_VOICE not in (*t.data.synthetic.voices, t.teacher.eval_voice)
    from avatar_jax.audio import tts

    assert vc.VAL_VOICE in tts.VOICES
    val = set(range(vc.VAL_OFFSET, vc.VAL_OFFSET + int(t.teacher.eval_sentences)))
    assert not val & set(range(int(t.data.synthetic.sentences)))
    assert not val & set(range(int(t.teacher.eval_offset), int(t.teacher.eval_offset) + int(t.teacher.eval_sentences)))
