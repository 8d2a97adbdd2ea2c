"""Exact resume after SIGKILL, and save-then-exit on SIGTERM, of a real training subprocess."""

import os
import signal

import numpy as np
import pytest

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
