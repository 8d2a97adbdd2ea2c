"""Exact resume after SIGKILL, and save-then-exit on SIGTERM, of training subprocesses: a tiny job
through the Checkpointer and the grain loader, and the real `avatar-jax train`."""

import json
import os
import signal

import jax
import numpy as np
import pytest
from avatar_jax.configs.tiny import get_config

from avatar_jax.config import apply_overrides, validate
from avatar_jax.data import synthetic
from avatar_jax.train import state as state_lib
from avatar_jax.train.checkpoint import Checkpointer
from avatar_jax.train.optimizer import make_optimizer
from avatar_jax.train.sharding import make_mesh

from . import jobs, tiny_job

STEPS = 10


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_job.make_dataset(str(tmp_path_factory.mktemp("clips")))


def test_sigkill_resumes_exactly_and_sigterm_saves_first(data, tmp_path):
    # the uninterrupted run (in this process, same 8 CPU devices and mesh as the subprocesses)
    ref_dir = str(tmp_path / "ref")
    reference = tiny_job.run(ref_dir, data, STEPS)
    ref_log = jobs.steps_log(ref_dir)
    assert sorted(ref_log) == list(range(1, STEPS + 1))
    assert np.mean([ref_log[s]["loss"] for s in (9, 10)]) < np.mean([ref_log[s]["loss"] for s in (1, 2)])

    work = str(tmp_path / "run")
    # 1) killed without warning after step 7: checkpoints are every 3 steps, so step 6 is the last one
    p = jobs.launch(["--workdir", work, "--data", data, "--steps", str(STEPS), "--hold-at", "7"],
                    log_path=str(tmp_path / "a.log"))
    jobs.wait_for(os.path.join(work, "hold.0"), [p])
    p.send_signal(signal.SIGKILL)
    assert jobs.finish(p) == -signal.SIGKILL
    assert sorted(os.listdir(os.path.join(work, "checkpoints"))) == ["3", "6"]
    os.remove(os.path.join(work, "hold.0"))

    # 2) restarted: resumes from step 6; asked to stop (SIGTERM) after step 8, it saves step 8 and exits 0
    p = jobs.launch(["--workdir", work, "--data", data, "--steps", str(STEPS), "--hold-at", "8"],
                    log_path=str(tmp_path / "b.log"))
    jobs.wait_for(os.path.join(work, "hold.0"), [p])
    p.send_signal(signal.SIGTERM)
    assert jobs.finish(p) == 0, jobs.output(p)
    run_b = jobs.summary(str(tmp_path / "b.log"))
    assert run_b["resumed_from"] == 6 and run_b["stopped_at"] == 8 and run_b["step"] == 8
    assert sorted(os.listdir(os.path.join(work, "checkpoints"))) == ["3", "6", "8"]

    # 3) restarted again: resumes from the SIGTERM checkpoint and finishes
    final = tiny_job.run(work, data, STEPS)
    assert final["resumed_from"] == 8 and final["step"] == STEPS

    log = jobs.steps_log(work)
    assert sorted(log) == list(range(1, STEPS + 1))
    for s in range(1, STEPS + 1):  # the same batches, the same losses, step by step
        assert log[s]["keys"] == ref_log[s]["keys"], s
        np.testing.assert_allclose(log[s]["loss"], ref_log[s]["loss"], rtol=1e-6, err_msg=f"step {s}")
    for k, v in reference["params"].items():
        np.testing.assert_allclose(final["params"][k], v, atol=1e-6, rtol=0, err_msg=k)


# ---- the real job: `avatar-jax train` on synthetic clips of the built-in avatar ---------------------------

SMALL = ["model.num_particles=8", "model.d_model=16", "model.num_heads=2", "audio.embedded_dim=16",
         "audio.embedded_width=16", "audio.embedded_depth=1", "train.seq_len=2", "train.batch_size=2",
         "train.warmup_steps=1", "train.capacity_factor=2.0", "train.eval_clips=0", "train.image_every=0",
         "train.log_every=1", "train.checkpoint_every=1", "train.keep_checkpoints=20", "data.num_threads=1"]
REAL_STEPS = 8


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    opts = synthetic.SyntheticOptions(size=32, num_gaussians=300, voices=("en-us",), sentences=1, framing="face")
    synthetic.prepare_synthetic("synthetic", root, opts, held_out=0.0, progress=False)
    return root


def _train(work, clips, log_path, cache):
    """`avatar-jax train` as a subprocess on 2 CPU devices; compiled programs shared through ``cache``."""
    args = ["train", "--config", "tiny", *[f"--config.{o}" for o in SMALL], f"--config.train.steps={REAL_STEPS}",
            "--workdir", work, "--data", clips, "--no-progress"]
    env = {"JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    return jobs.launch(args, devices=2, env=env, log_path=log_path, module="avatar_jax.cli")


def _wait_for_step(work, after, procs):
    """Block until a complete checkpoint newer than ``after`` is on disk; return its step."""
    ckpt_dir = os.path.join(work, "checkpoints")

    def newest():
        steps = [int(n) for n in os.listdir(ckpt_dir) if n.isdigit()] if os.path.isdir(ckpt_dir) else []
        return max(steps, default=-1)

    jobs.wait_until(lambda: newest() > after, procs)
    return newest()


def _restore(work, step):
    """``(state as numpy, extra)`` of a job's checkpoint ``step``, restored on one device."""
    config = get_config()  # the jobs' config, restored here on one device
    apply_overrides(config, SMALL + [f"train.steps={REAL_STEPS}"])
    validate(config, num_devices=1)
    mesh = make_mesh({"data": 1}, jax.devices()[:1])
    _, abstract = state_lib.abstract_state(config, mesh, make_optimizer(config.train))
    with Checkpointer(work, config) as ckpt:
        state, extra = ckpt.restore(step, abstract)

    def plain(x):
        return np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)

    return jax.tree.map(plain, state), extra


@pytest.mark.slow
def test_real_job_killed_then_preempted_continues_like_the_uninterrupted_job(clips, tmp_path):
    cache = str(tmp_path / "jax-cache")
    ref_dir, work = str(tmp_path / "ref"), str(tmp_path / "run")
    ref = _train(ref_dir, clips, str(tmp_path / "ref.log"), cache)
    assert jobs.finish(ref, timeout=600) == 0, jobs.output(ref)
    reference = json.loads(open(os.path.join(ref_dir, "summary.json")).read())
    assert reference["stopped"] == "done" and len(reference["losses"]) == REAL_STEPS

    # killed without warning once a checkpoint is on disk (possibly while writing the next one)
    p = _train(work, clips, str(tmp_path / "a.log"), cache)
    _wait_for_step(work, 1, [p])
    p.send_signal(signal.SIGKILL)
    assert jobs.finish(p) == -signal.SIGKILL
    resumed_from = max(int(n) for n in os.listdir(os.path.join(work, "checkpoints")) if n.isdigit())

    # restarted, then preempted (SIGTERM) once it has saved a newer step: it saves the step it is at, exits 0
    p = _train(work, clips, str(tmp_path / "b.log"), cache)
    _wait_for_step(work, resumed_from, [p])
    p.send_signal(signal.SIGTERM)
    assert jobs.finish(p) == 0, jobs.output(p)
    summary = json.loads(open(os.path.join(work, "summary.json")).read())
    stop = summary["step"]
    assert summary["stopped"] == "preempted" and resumed_from < stop < REAL_STEPS
    assert max(int(n) for n in os.listdir(os.path.join(work, "checkpoints")) if n.isdigit()) == stop

    # the steps after the resume equal the uninterrupted job's: losses and the saved state
    np.testing.assert_allclose(summary["losses"], reference["losses"][:stop], rtol=1e-6, atol=1e-7)
    got, extra = _restore(work, stop)
    want, ref_extra = _restore(ref_dir, stop)
    assert extra["data"] == ref_extra["data"]  # the data iterator at the same batch
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0, err_msg=jax.tree_util.keystr(path))
