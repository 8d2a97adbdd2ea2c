"""The Table-3 ablation runner: which rows exist, that each row really changes the model or the losses, and the
runner's mechanics (table written, a killed run resumes with the finished rows, progress lines, budget guard)
with a stand-in trainer and renderer, so no training runs here."""

import json
import os

import numpy as np
import pytest

from avatar_jax.config import load_config
from avatar_jax.errors import InputError
from avatar_jax.eval import ablations
from avatar_jax.eval.report import EvalClip, MethodOutput, Options

T, H, W = 12, 16, 16


def base_config(*extra):
    return load_config("tiny", ["model.num_particles=8", "model.d_model=16", "model.num_heads=2",
                                "audio.embedded_dim=16", "audio.embedded_width=16", "audio.embedded_depth=1",
                                "train.steps=3", *extra])


def test_rows_cover_every_switch_and_loss_that_exists():
    base = base_config()
    rows = ablations.ablation_rows(base)
    switches = sorted(k for k in base.model.keys() if k.startswith("use_"))
    assert len(switches) >= 8  # the seven of Table 3 and the body-template path
    assert rows[0] == ablations.Row(ablations.FULL, ())
    assert [r.overrides for r in rows[1:1 + len(switches)]] == [(f"model.{k}=false",) for k in switches]
    names = [r.name for r in rows]
    assert "w/o keypoint loss" in names and names[-1] == ablations.BASELINE
    assert "w/o VSD" not in names  # the base trains without VSD: nothing to take away
    assert "w/o VSD" in [r.name for r in ablations.ablation_rows(base_config("loss.vsd=0.5"), baseline=False)]
    assert ablations.BASELINE not in [r.name for r in ablations.ablation_rows(base, baseline=False)]
    off = ablations.row_config(base, rows[1])
    assert off.model[switches[0]] is False and base.model[switches[0]] is True  # the base is untouched


def test_each_row_changes_the_model_or_its_losses():
    import jax

    from avatar_jax.train import state as state_lib

    base = base_config()

    def param_shapes(config):
        _, params = state_lib.abstract_model(config)
        return {jax.tree_util.keystr(p): tuple(x.shape)
                for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}

    full = param_shapes(base)
    seen = []
    for row in ablations.ablation_rows(base)[1:]:
        config = ablations.row_config(base, row)
        if row.name == "w/o keypoint loss":
            assert float(config.loss.keypoints) == 0.0 and float(base.loss.keypoints) > 0
            continue
        shapes = param_shapes(config)
        assert shapes != full, f"{row.name} trains the very same parameters as the full model"
        seen.append(shapes)
    assert len({tuple(sorted(s)) for s in seen}) == len(seen)  # no two rows remove the same thing


def _clip(k):
    rng = np.random.default_rng(k)
    return EvalClip(f"c{k}", rng.integers(0, 200, (T, H, W, 3), dtype=np.uint8), np.full((T, H, W), 255, np.uint8),
                    np.zeros(T * 640, np.float32), None)


class Killed(Exception):
    pass


def test_runner_writes_the_table_and_resumes_after_a_kill(tmp_path):
    base = base_config()
    rows = [ablations.Row(ablations.FULL, ()), ablations.Row("w/o gaussian head", ("model.use_gaussian_head=false",)),
            ablations.Row(ablations.BASELINE, ("model.kind=pose_driven",))]
    clips = [_clip(0), _clip(1)]
    trained, logs = [], []
    error = {r.name: 0.02 * (k + 1) for k, r in enumerate(rows)}  # row k renders the truth off by 0.02 (k+1)

    def train_fn(config, workdir, data_root, progress):
        name = next(r.name for r in rows if r.slug == os.path.basename(workdir))
        trained.append((name, config.model.use_gaussian_head, config.model.kind))
        if name == "w/o gaussian head" and len(trained) == 2:
            raise Killed  # the first attempt dies in this row's training
        return {"step": int(config.train.steps), "final_loss": 0.5}

    def render_fn(workdir, name, root, clip_list, rest):
        out = {name: [MethodOutput(np.clip(c.frames / 255.0 + error[name], 0, 1)) for c in clip_list]}
        if rest:
            out[ablations.REST] = [MethodOutput(np.zeros((T, H, W, 3), np.float32)) for _ in clip_list]
        return out

    kw = dict(data_root=str(tmp_path), opts=Options(csim=False), rows=rows, train_fn=train_fn, render_fn=render_fn,
              clip_list=clips, log=logs.append, progress=False)
    with pytest.raises(Killed):
        ablations.run_ablations(base, str(tmp_path), **kw)
    state = json.loads(open(tmp_path / ablations.STATE_FILE).read())
    assert state["rows"][ablations.FULL]["status"] == "done"
    assert state["rows"]["w/o gaussian head"]["status"] == "pending"
    assert "Not finished: w/o gaussian head, pose-driven baseline" in open(tmp_path / ablations.TABLE_FILE).read()

    state = ablations.run_ablations(base, str(tmp_path), **kw)  # the rerun: only the unfinished rows train
    assert [t[0] for t in trained] == [ablations.FULL, "w/o gaussian head", "w/o gaussian head", ablations.BASELINE]
    assert trained[1][1] is False and trained[3][2] == "pose_driven" and trained[0][1] is True
    psnr = {name: row["metrics"]["psnr"] for name, row in state["rows"].items()}
    for k, r in enumerate(rows):  # a uniform colour error e gives PSNR -20 log10(e)
        assert psnr[r.name] == pytest.approx(-20 * np.log10(0.02 * (k + 1)), abs=0.1)
        assert state["rows"][r.name]["step"] == 3
    assert state["references"][ablations.REST]["psnr"] < psnr[ablations.BASELINE]
    table = open(tmp_path / ablations.TABLE_FILE).read()
    assert "Not finished" not in table and "3 steps of" in table
    for name in [*psnr, ablations.REST, "ground truth"]:
        assert f"| {name} |" in table
    assert any(line.startswith("[3/3] pose-driven baseline") for line in logs)  # progress per row
    assert any("1 finished before" in line for line in logs)

    with pytest.raises(InputError, match="another budget"):  # same folder, different budget: refused
        ablations.run_ablations(base_config("train.steps=4"), str(tmp_path), **kw)
