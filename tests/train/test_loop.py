"""The training job end to end on synthetic clips: CLI run, skipped NaN steps, resume on another mesh, held-out
scores, the stop after too many bad steps, and every bad input as one clear error."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from avatar_jax import cli
from avatar_jax.config import load_config
from avatar_jax.data import index, rig, synthetic
from avatar_jax.errors import ConfigError, InputError, TrainingError
from avatar_jax.train import loop
from avatar_jax.train.checkpoint import Checkpointer
from avatar_jax.train.sharding import make_mesh

from .synthetic_clips import SIZE, add_held_out, template_avatar

SMALL = ["model.num_particles=8", "model.d_model=16", "model.num_heads=2", "audio.embedded_dim=16",
         "audio.embedded_width=16", "audio.embedded_depth=1", "train.seq_len=2", "train.log_every=2",
         "train.warmup_steps=1", "train.capacity_factor=2.0", "data.num_threads=1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Clips of a reconstruct-format avatar (``prepare --synthetic --avatar DIR``): one voice, two sentences for
    training; an unseen sentence in an unseen voice held out."""
    avatar = template_avatar(str(tmp_path_factory.mktemp("avatar")), 400)
    root = str(tmp_path_factory.mktemp("clips"))
    opts = synthetic.SyntheticOptions(size=SIZE, num_gaussians=400, voices=("en-us",), sentences=2, framing="face")
    synthetic.prepare_synthetic(avatar, root, opts, held_out=0.0, progress=False)
    add_held_out(root, avatar, 400)
    return root


def config(*overrides):
    return load_config("tiny", SMALL + list(overrides))


def test_prepared_dataset_carries_the_avatar_its_clips_show(dataset):
    subject = index.load_index(dataset)["clips"][0]["subject_id"]
    fig, marks, defined = synthetic.load_rig_avatar(synthetic.avatar_path(dataset, subject))
    avatar = json.loads(open(os.path.join(dataset, "clips", index.load_index(dataset)["clips"][0]["clip_id"]
                                          + ".json")).read())["extra"]["avatar"]
    r = rig.build_rig(synthetic.figure_from_avatar(avatar), seed=0)
    np.testing.assert_array_equal(fig.means, r.figure.means)  # the rigged figure, lips and eyes included
    assert marks.shape == (553, 3) and defined[33 + 13] and defined[33 + 14]  # both lip keypoints exist
    np.testing.assert_allclose(marks[33 + 13], r.keypoints["face"][0][13])


def test_cli_job_skips_a_nan_step_resumes_and_stops_after_bad_steps(dataset, tmp_path):
    work = str(tmp_path / "run")
    args = ["train", "--config", "tiny", *[f"--config.{o}" for o in SMALL], "--config.train.batch_size=4",
            "--config.train.steps=4", "--config.train.checkpoint_every=2", "--config.train.debug_nan_steps=(1,)",
            "--config.train.eval_clips=1", "--config.train.image_every=2", "--workdir", work, "--data", dataset,
            "--no-progress"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}  # one device compiles fastest
    res = subprocess.run([sys.executable, "-m", "avatar_jax.cli", *args], capture_output=True, text=True, env=env,
                         timeout=1800)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "compiled step per device" in res.stdout and "GFLOP" in res.stdout and "frames/s" in res.stdout
    summary = json.loads(open(os.path.join(work, "summary.json")).read())
    assert summary["step"] == 4 and summary["bad_steps"] == 1 and summary["devices"] == 1
    losses = summary["losses"]
    assert np.isnan(losses[1]) and all(np.isfinite(losses[i]) for i in (0, 2, 3))
    assert summary["compiled"]["flops"] > 0 and summary["compiled"]["temp_size_in_bytes"] > 0
    for when in ("before", "after"):
        scores = summary["held_out"][when]
        assert scores["clips"] == 1 and 5 < scores["psnr_mask"] < 60 and -1 <= scores["mouth_corr"] <= 1
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(work, "tb")))
    # the workdir's config names the data it trained on (--data), so eval and export need no --data again
    assert json.loads(open(os.path.join(work, "config.json")).read())["data"]["root"] == dataset

    # Resume in this process (8 devices, a 1-device mesh) and keep going; then poison two steps in a row.
    cfg = config("mesh.data=1", "mesh.model=-1", "train.batch_size=4", "train.steps=8", "train.checkpoint_every=2",
                 "train.debug_nan_steps=(5,6)",
                 "train.max_bad_steps=2", "train.eval_clips=0", "train.image_every=0")
    one = make_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])
    with pytest.raises(TrainingError, match=r"stopped at step 7: 2 non-finite steps in a row.*checkpoint: step 6"):
        loop.train(cfg, work, data_root=dataset, mesh=one, progress=False)
    ckpt = Checkpointer(work, cfg)
    from avatar_jax.train import state as state_lib
    from avatar_jax.train.optimizer import make_optimizer

    _, abstract = state_lib.abstract_state(cfg, one, make_optimizer(cfg.train))
    state, extra = ckpt.restore(6, abstract)
    ckpt.close()
    assert int(state.step) == 6 and int(state.bad_total) == 2 and int(state.bad_streak) == 1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
    assert len(extra["losses"]) == 6 and extra["losses"][:4] == pytest.approx(losses, nan_ok=True)
    assert np.isfinite(extra["losses"][4]) and np.isnan(extra["losses"][5])


def _copy_dataset(src: str, dst: str) -> str:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("override,error,needle", [
    ("train.steps=0", ConfigError, "train.steps must be >= 1"),
    ("train.max_bad_steps=0", ConfigError, "max_bad_steps must be >= 1"),
    ("train.batch_size=3", ConfigError, "divisible by the data-parallel size"),
    ("loss.kpt_rho=huber", ConfigError, "kpt_rho"),
])
def test_config_errors_are_one_line_before_any_work(dataset, tmp_path, override, error, needle):
    with pytest.raises(error, match=needle):
        loop.train(config("train.batch_size=8", override), str(tmp_path / "w"), data_root=dataset, progress=False)


def test_empty_dataset_is_an_input_error(tmp_path):
    root = tmp_path / "empty"
    (root / "clips").mkdir(parents=True)
    index.build_index(str(root), held_out=0.0)
    with pytest.raises(InputError, match="has no clips in split 'train'"):
        loop.train(config("train.batch_size=8"), str(tmp_path / "w"), data_root=str(root), progress=False)
    res = cli.main(["train", "--config", "tiny", "--workdir", str(tmp_path / "w2"), "--data", str(tmp_path / "none")])
    assert res == cli.EXIT_USAGE


def test_corrupt_records_are_an_input_error(dataset, tmp_path):
    root = _copy_dataset(dataset, str(tmp_path / "corrupt"))
    for name in os.listdir(os.path.join(root, "clips")):
        if name.endswith(".array_record"):
            with open(os.path.join(root, "clips", name), "wb") as f:
                f.write(b"\x00garbage" * 64)
    with pytest.raises(InputError, match="unreadable|cannot read"):
        loop.train(config("train.batch_size=8"), str(tmp_path / "w"), data_root=root, progress=False)


def test_missing_avatar_and_several_subjects_are_refused(dataset, tmp_path):
    root = _copy_dataset(dataset, str(tmp_path / "noavatar"))
    subject = index.load_index(root)["clips"][0]["subject_id"]
    os.remove(synthetic.avatar_path(root, subject))
    with pytest.raises(InputError, match=f"no avatar for subject '{subject}'"):
        loop.train(config("train.batch_size=8"), str(tmp_path / "w"), data_root=root, progress=False)
    idx = index.load_index(dataset)
    idx["clips"][0]["subject_id"] = "someone_else"
    root2 = _copy_dataset(dataset, str(tmp_path / "two"))
    meta = os.path.join(root2, "clips", idx["clips"][0]["clip_id"] + ".json")
    m = json.loads(open(meta).read())
    m["subject_id"] = "someone_else"
    open(meta, "w").write(json.dumps(m))
    index.build_index(root2, held_out=0.0)
    with pytest.raises(InputError, match="one personal avatar, but the training split shows 2 subjects"):
        loop.train(config("train.batch_size=8"), str(tmp_path / "w2"), data_root=root2, progress=False)


def test_bench_train_quick_runs_through_the_cli(tmp_path):
    assert cli.main(["bench", "train", "--config.bench.quick=true", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench_train.json").read_text())["rows"]
    assert [r["devices"] for r in rows] == [1, 8]
    for r in rows:
        assert r["step_s"] > 0 and r["frames_per_s"] > 0 and r["peak_mib_per_device"] > 0 and np.isfinite(r["loss"])
    assert rows[1]["speedup_vs_1"] > 0 and rows[0]["memory_ratio_vs_1"] == 1.0
