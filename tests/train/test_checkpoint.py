"""Checkpointer and PreemptionGuard on a small sharded train state (in-process, 8 CPU devices)."""

import errno
import json
import os
import signal

import jax
import numpy as np
import pytest
from etils import epath

from avatar_jax.errors import ConfigError, InputError
from avatar_jax.train.checkpoint import (
    Checkpointer,
    CheckpointError,
    PreemptionGuard,
    fingerprint,
    incompatibilities,
)
from avatar_jax.train.sharding import make_mesh

from . import tiny_job

LR = 0.01


def _state(mesh, shift=0.0):
    abstract = tiny_job.abstract_state(mesh, LR)
    state = jax.device_put(tiny_job.new_state(LR), jax.tree.map(lambda a: a.sharding, abstract))
    return jax.tree.map(lambda x: x + shift, state), abstract


def _numpy(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def _assert_tree_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, _numpy(a), _numpy(b))


def test_interval_keep_n_and_exact_roundtrip(tmp_path):
    cfg = tiny_job.config(checkpoint_every=2, keep_checkpoints=2)
    mesh = make_mesh({"data": -1})
    with Checkpointer(str(tmp_path), cfg) as ckpt:
        assert ckpt.latest_step() is None
        started = {s: ckpt.save(s, _state(mesh, s)[0], {"data": {"pos": s}}) for s in range(1, 8)}
        assert [s for s, ok in started.items() if ok] == [2, 4, 6]  # every 2 steps
        assert ckpt.save(7, _state(mesh, 7)[0], {"data": {"pos": 7}}, force=True)
        assert not ckpt.save(7, _state(mesh, 7)[0], {}, force=True)  # an existing step is never rewritten
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["train"]["checkpoint_every"] == 2
    with Checkpointer(str(tmp_path), cfg) as ckpt:
        assert ckpt.all_steps() == [6, 7] and ckpt.latest_step() == 7  # keep-2
        want, abstract = _state(mesh, 6)
        got, extra = ckpt.restore(6, abstract)
        assert extra == {"data": {"pos": 6}}
        _assert_tree_equal(got, want)
        with pytest.raises(InputError, match="no checkpoint of step 4"):
            ckpt.restore(4, abstract)
        with pytest.raises(InputError, match="JSON"):
            ckpt.save(8, want, {"bad": object()}, force=True)


def test_checkpoint_saved_on_8_devices_restores_on_2x4_and_1_with_same_outputs(tmp_path):
    devices = jax.devices()
    x = np.random.default_rng(0).uniform(size=(5, 3)).astype(np.float32)
    mesh8 = make_mesh({"data": 1, "fsdp": 1, "model": 8})
    state, _ = _state(mesh8, 0.0)
    state["params"] = jax.tree.map(lambda p: p + 0.1 * np.arange(p.size).reshape(p.shape) / p.size, state["params"])
    state["rng"] = jax.random.key(7)  # typed PRNG keys travel too
    assert len(state["params"]["w1"].sharding.device_set) == 8
    want = np.asarray(tiny_job.apply(state["params"], x))
    cfg = tiny_job.config()
    with Checkpointer(str(tmp_path), cfg) as ckpt:
        ckpt.save(5, state, {"note": "mesh8"}, force=True)
    for shape, devs in [({"data": 2, "model": 4}, devices), ({"data": 1}, devices[:1])]:
        mesh = make_mesh(shape, devs)
        abstract = tiny_job.abstract_state(mesh, LR)
        abstract["rng"] = jax.ShapeDtypeStruct((), jax.random.key(0).dtype,
                                               sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        with Checkpointer(str(tmp_path), cfg) as ckpt:
            got, extra = ckpt.restore(None, abstract)
        assert extra == {"note": "mesh8"}
        for leaf, ab in zip(jax.tree.leaves(got), jax.tree.leaves(abstract), strict=True):
            assert leaf.sharding == ab.sharding  # placed as asked, on the new mesh
        assert got["params"]["w1"].sharding.mesh.shape == dict(mesh.shape)
        np.testing.assert_array_equal(jax.random.key_data(got["rng"]), jax.random.key_data(jax.random.key(7)))
        np.testing.assert_allclose(np.asarray(tiny_job.apply(got["params"], x)), want, rtol=1e-6, atol=1e-7)
        _assert_tree_equal(got["opt_state"], state["opt_state"])


def test_incompatible_workdir_is_refused_and_nothing_is_overwritten(tmp_path):
    cfg = tiny_job.config()
    mesh = make_mesh({"data": -1})
    with Checkpointer(str(tmp_path), cfg) as ckpt:
        ckpt.save(3, _state(mesh)[0], {}, force=True)
    before = {p: p.read_bytes() for p in map(epath.Path, tmp_path.rglob("*")) if p.is_file()}

    bad = tiny_job.config()
    with bad.unlocked():
        bad.model.d_model = 32
        bad.train.batch_size = 4
    with pytest.raises(ConfigError, match=r"incompatible config \(model.d_model: 64 -> 32; train.batch_size: 8 -> 4\)"):
        Checkpointer(str(tmp_path), bad)
    after = {p: p.read_bytes() for p in map(epath.Path, tmp_path.rglob("*")) if p.is_file()}
    assert after == before

    # run length, intervals, schedule values and the mesh may change between restarts
    ok = tiny_job.config(steps=500, checkpoint_every=7, log_every=1, learning_rate=0.5)
    with ok.unlocked():
        ok.mesh.data, ok.mesh.model = 2, 4
        ok.model.compute_dtype = "bfloat16"
    assert incompatibilities(cfg, ok) == []
    with Checkpointer(str(tmp_path), ok) as ckpt:
        assert ckpt.latest_step() == 3
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 500

    # a key added by a newer code version (absent from the stored config) is not a difference
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["model"]["window"]
    assert incompatibilities(stored, cfg) == []
    assert "model.window" in fingerprint(cfg) and "train.steps" not in fingerprint(cfg)

    os.remove(tmp_path / "config.json")
    with pytest.raises(InputError, match="no config.json"):
        Checkpointer(str(tmp_path), cfg)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        Checkpointer(str(tmp_path / "file"), cfg)


@pytest.mark.parametrize("fail_at", ["extra.orbax-checkpoint-tmp/metadata", "6.orbax-checkpoint-tmp/commit_success"])
def test_disk_full_during_async_save_keeps_the_latest_good_checkpoint(tmp_path, monkeypatch, fail_at):
    """The disk fills up while step 6 is written: half-way through its items, or at its final commit
    marker (every item already on disk). Keep-1, so step 3 is the only good step and must survive."""
    cfg = tiny_job.config(keep_checkpoints=1)
    mesh = make_mesh({"data": -1})
    good, abstract = _state(mesh, 1.0)
    ckpt = Checkpointer(str(tmp_path), cfg)
    assert ckpt.save(3, good, {"data": {"pos": 3}})
    ckpt.wait()

    path_cls = type(epath.Path(str(tmp_path)))
    write_text = path_cls.write_text

    def full_disk(self, data, *args, **kwargs):
        if "6.orbax-checkpoint-tmp" in str(self) and fail_at in str(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(path_cls, "write_text", full_disk)
    with pytest.raises(CheckpointError) as err:  # raised by save, or by wait if the write outlives it
        ckpt.save(6, _state(mesh, 2.0)[0], {"data": {"pos": 6}}, force=True)
        ckpt.wait()
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message
    assert "step 6" in message and "latest good checkpoint: step 3" in message
    # the half-written step never became a step (it stays a temporary directory until cleaned up)
    assert [p for p in os.listdir(tmp_path / "checkpoints") if p.isdigit()] == ["3"]
    monkeypatch.undo()
    ckpt.close()  # the error was reported once; closing does not raise it again

    with Checkpointer(str(tmp_path), cfg) as again:  # a restarted job: step 3 is intact
        assert again.all_steps() == [3]
        state, extra = again.restore(3, abstract)
        assert extra == {"data": {"pos": 3}}
        _assert_tree_equal(state, good)
        # (after a mid-write failure orbax may still be flushing step 6's arrays in this process)
        if fail_at.endswith("commit_success"):
            assert again.save(9, _state(mesh, 2.0)[0], {"data": {"pos": 9}}, force=True)  # saving works again
    if fail_at.endswith("commit_success"):
        assert sorted(os.listdir(tmp_path / "checkpoints")) == ["9"]  # keep-1, half-written step cleaned


def test_preemption_guard_turns_signals_into_a_flag_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested and guard.signal_received == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C after a stop request is not swallowed
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    with PreemptionGuard(signals=(signal.SIGINT,)) as guard:
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.requested


def test_extra_that_differs_between_processes_is_refused(monkeypatch):
    """Only process 0 writes ``extra`` and every process restores it, so on 2 processes whose states
    differ the save must fail (here the other process is simulated by the all-gather)."""
    from jax.experimental import multihost_utils

    from avatar_jax.train.checkpoint import check_same_on_all_processes

    other = {}
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather",
                        lambda x: np.stack([np.asarray(x), np.asarray(x) + other.get("shift", 0)]))
    check_same_on_all_processes('{"data": {"next_index": 3}}')  # the other process agrees
    other["shift"] = 1
    with pytest.raises(CheckpointError, match="differs between processes"):
        check_same_on_all_processes('{"data": {"next_index": 3}}')
