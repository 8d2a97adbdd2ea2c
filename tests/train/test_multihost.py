"""Multi-host: launch detection, per-host data shards, and 2 processes x 4 CPU devices (gloo) = 1 x 8."""

import os
import shutil
import signal

import numpy as np
import pytest

from avatar_jax.data import loader
from avatar_jax.errors import ConfigError
from avatar_jax.train import distributed
from avatar_jax.train.checkpoint import Checkpointer
from avatar_jax.train.sharding import make_mesh

from . import jobs, tiny_job

MESH = "data=2,model=4"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_job.make_dataset(str(tmp_path_factory.mktemp("clips")))


def test_launch_detection_from_the_environment():
    d = distributed.detect
    assert d({}) == distributed.LaunchSpec("single")
    explicit = {"AVATAR_JAX_COORDINATOR": "10.0.0.1:1234", "AVATAR_JAX_NUM_PROCESSES": "4",
                "AVATAR_JAX_PROCESS_ID": "3"}
    assert d(explicit) == distributed.LaunchSpec("explicit", "10.0.0.1:1234", 4, 3)
    # flags win over the environment
    assert d(explicit, process_id=0, coordinator="h:9") == distributed.LaunchSpec("explicit", "h:9", 4, 0)
    assert d({"AVATAR_JAX_NUM_PROCESSES": "1"}) == distributed.LaunchSpec("single")
    slurm = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "16", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
             "SLURM_STEP_NODELIST": "gpu[001-002]"}
    assert d(slurm) == distributed.LaunchSpec("slurm", None, 16, 5)
    assert d({**slurm, "SLURM_NTASKS": "1"}).method == "single"  # an interactive one-task allocation
    assert d({**slurm, "SLURM_STEP_NUM_TASKS": "1"}).method == "single"  # the batch script itself, not srun
    assert d({**slurm, "SLURM_STEP_NUM_TASKS": "8"}) == distributed.LaunchSpec("slurm", None, 8, 5)
    assert d({k: v for k, v in slurm.items() if k != "SLURM_STEP_NODELIST"}).method == "single"
    assert d({**slurm, **explicit}).method == "explicit"
    assert d({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}).method == "tpu"
    assert d({"AVATAR_JAX_DISTRIBUTED": "auto"}).method == "auto"
    assert d({**slurm, "AVATAR_JAX_DISTRIBUTED": "off"}).method == "single"
    for bad, match in [({"AVATAR_JAX_NUM_PROCESSES": "2"}, "missing AVATAR_JAX_COORDINATOR, AVATAR_JAX_PROCESS_ID"),
                       ({**explicit, "AVATAR_JAX_PROCESS_ID": "4"}, "out of range"),
                       ({**explicit, "AVATAR_JAX_NUM_PROCESSES": "two"}, "must be an integer"),
                       ({**explicit, "AVATAR_JAX_COORDINATOR": "10.0.0.1"}, "host:port"),
                       ({"AVATAR_JAX_DISTRIBUTED": "yes"}, "'auto' or 'off'")]:
        with pytest.raises(ConfigError, match=match):
            d(bad)
    assert distributed.initialize_from_env(env={}).method == "single"  # one process: nothing to do
    assert not distributed.is_initialized()


def test_train_command_takes_the_launch_as_flags():
    from avatar_jax.cli import build_parser

    args = build_parser().parse_args(["train", "--coordinator", "node0:7777", "--num-processes", "8",
                                      "--process-id", "6"])
    assert distributed.detect({}, **distributed.launch_kwargs(args)) == distributed.LaunchSpec(
        "explicit", "node0:7777", 8, 6)
    assert distributed.launch_kwargs(build_parser().parse_args(["train"])) == dict(
        coordinator=None, num_processes=None, process_id=None)


def test_each_host_reads_only_its_rows_of_the_one_host_batches(data):
    source = loader.WindowSource(data, "train", seq_len=2)
    reads: dict[int, list[tuple[int, int]]] = {}

    class Counting:  # the window source, recording which windows each host reads from disk
        def __init__(self, host):
            self.host = host

        def __len__(self):
            return len(source)

        def __getitem__(self, i):
            w = source.windows[int(i)]
            reads.setdefault(self.host, []).append((w.clip, w.start))
            return source[i]

    def keys(batch):
        return list(zip(batch["clip"].tolist(), batch["start"].tolist(), strict=True))

    def pipeline(host, batch_size, count):
        return iter(loader.make_dataset(Counting(host), batch_size=batch_size, seed=5, shard_index=max(host, 0),
                                        shard_count=count, num_threads=1, prefetch=0))

    one, hosts = pipeline(-1, 8, 1), [pipeline(0, 4, 2), pipeline(1, 4, 2)]
    steps = 2 * len(source) // 8 + 1  # past two epoch boundaries (reshuffled each epoch)
    got: dict[int, list] = {0: [], 1: []}
    for _ in range(steps):
        whole = keys(next(one))
        for h in range(2):
            got[h] += keys(next(hosts[h]))
        assert got[0][-4:] + got[1][-4:] == whole  # the global batch is the one-host batch
    for h in range(2):
        assert reads[h] == got[h]  # and a host reads exactly its own rows, nothing else
    assert len(set(got[0][:4]) | set(got[1][:4])) == 8


def _launch_pair(work, data, steps, port, tmp_path, tag, *extra_args):
    return [jobs.launch(["--workdir", work, "--data", data, "--steps", str(steps), "--mesh", MESH, *extra_args],
                        devices=4, log_path=str(tmp_path / f"{tag}{i}.log"),
                        env={"AVATAR_JAX_COORDINATOR": f"127.0.0.1:{port}", "AVATAR_JAX_NUM_PROCESSES": "2",
                             "AVATAR_JAX_PROCESS_ID": str(i)})
            for i in range(2)]


def test_two_processes_of_four_devices_equal_one_process_of_eight(data, tmp_path):
    ref_dir = str(tmp_path / "ref")
    reference4 = tiny_job.run(ref_dir, data, 4, mesh_shape={"data": 2, "model": 4})

    # 2 processes x 4 devices, parked after step 4; only process 1 is told to stop (SIGTERM):
    # the processes agree, and both save step 4 and exit cleanly
    work = str(tmp_path / "mp")
    procs = _launch_pair(work, data, 6, jobs.free_port(), tmp_path, "a", "--hold-at", "4")
    for i in range(2):
        jobs.wait_for(os.path.join(work, f"hold.{i}"), procs)
    procs[1].send_signal(signal.SIGTERM)
    for p in procs:
        assert jobs.finish(p) == 0, jobs.output(p)
    for i in range(2):
        s = jobs.summary(str(tmp_path / f"a{i}.log"))
        assert s["process_count"] == 2 and s["stopped_at"] == 4 and s["step"] == 4

    # the checkpoint the two hosts wrote together restores in one process, on a (8,) mesh
    mesh = make_mesh({"data": 1, "model": 8})
    with Checkpointer(work, tiny_job.config()) as ckpt:
        assert ckpt.all_steps() == [3, 4]
        state, extra = ckpt.restore(4, tiny_job.abstract_state(mesh, 0.02))
    assert extra == {"data": {"next_index": 4}}
    for k, v in reference4["params"].items():
        np.testing.assert_allclose(np.asarray(state["params"][k]), v, atol=1e-6, err_msg=k)

    # that step resumes on 1 process (the iterator position counts global batches) ...
    one_dir = str(tmp_path / "one")
    shutil.copytree(work, one_dir, ignore=shutil.ignore_patterns("log.*", "hold.*"))
    one = tiny_job.run(one_dir, data, 6, mesh_shape={"data": 2, "model": 4})
    assert one["resumed_from"] == 4

    # ... and as 2 processes again: both resume at step 4 (from process 0's iterator state) and finish
    procs = _launch_pair(work, data, 6, jobs.free_port(), tmp_path, "b", "--out", str(tmp_path / "mp.npz"))
    for p in procs:
        assert jobs.finish(p) == 0, jobs.output(p)
    assert jobs.summary(str(tmp_path / "b1.log"))["resumed_from"] == 4
    reference6 = tiny_job.run(ref_dir, data, 6, mesh_shape={"data": 2, "model": 4})
    ref_log = jobs.steps_log(ref_dir)
    logs = [jobs.steps_log(work, i) for i in range(2)]
    for step in range(1, 7):
        assert logs[0][step]["keys"] + logs[1][step]["keys"] == ref_log[step]["keys"]  # each host: its half
        for i in range(2):
            np.testing.assert_allclose(logs[i][step]["loss"], ref_log[step]["loss"], rtol=1e-5,
                                       err_msg=f"process {i} step {step}")
    one_log = jobs.steps_log(one_dir)
    assert [one_log[s]["keys"] for s in (5, 6)] == [ref_log[s]["keys"] for s in (5, 6)]
    final = np.load(tmp_path / "mp.npz")
    for k, v in reference6["params"].items():
        np.testing.assert_allclose(final[k], v, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(one["params"][k], v, atol=1e-6, err_msg=k)
