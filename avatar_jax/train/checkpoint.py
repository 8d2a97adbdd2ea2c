"""Checkpoints of a training run in its workdir: orbax async saves, keep-N, exact resume, config guard.

Workdir layout::

    WORKDIR/config.json             the run's config (rewritten at each compatible start)
    WORKDIR/checkpoints/<step>/     one orbax step: ``state`` (the train-state pytree, sharded
                                    arrays), ``extra`` (JSON: data-iterator state, counters...) and,
                                    for jobs that have one, an optional pytree item of
                                    :data:`OPTIONAL_ITEMS` (the variational VSD's LoRA score)

A step is written into a temporary directory and renamed into place only once every item is on
disk (orbax's atomic commit), so a save that fails half-way (disk full, preemption during the
write) leaves the previous steps untouched and the half-written one invisible to ``latest_step``.

A workdir holding checkpoints of an *incompatible* config is refused before anything is written.
Incompatible means a different :func:`fingerprint`: the config entries that fix parameter and
optimiser shapes or what the model and data mean. Run length, log/checkpoint intervals, learning
rate schedule values and the mesh shape are free to change between restarts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from avatar_jax.errors import AvatarJaxError, ConfigError, InputError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
# Pytree items a step may carry besides ``state`` (a job saves them only when it has them).
OPTIONAL_ITEMS = ("vsd_score",)  # the variational VSD's LoRA score and its AdamW state (train/vsd.py)

# Config entries (dotted paths; a subtree covers every key below it) that decide compatibility.
FINGERPRINT_KEYS = (
    "seed",  # the data order and initialisation a resumed run continues
    "model",  # every parameter shape and the model's meaning
    "audio",  # encoder kind and sizes (its parameters train with the avatar)
    "render.width", "render.height", "render.fov_y_deg", "render.background",
    "data.fps", "data.stride",  # what one training sequence is
    "train.batch_size", "train.seq_len",  # the data iterator's position means batches of this shape
    "train.optimizer",  # the optimiser kind fixes the optimiser state's structure
    "train.grad_accum",  # accumulation buffers (optax.MultiSteps) live in the optimiser state
    "train.avatar",  # the canonical avatar the model deforms
)
# Keys below a fingerprinted subtree that only change how, not what, is computed.
# audio.checkpoint_dir: where the pretrained encoder's weights were read from at the fresh start; its
# architecture (audio.encoder_spec) is fingerprinted and the weights live in the checkpoints.
COMPATIBLE_KEYS = ("model.compute_dtype", "audio.checkpoint_dir")


class CheckpointError(AvatarJaxError):
    """A checkpoint could not be written or read (disk full, corrupt step, shape mismatch)."""


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _plain(config) -> dict:
    """A ConfigDict or mapping as plain JSON values (tuples -> lists), for storing and comparing."""
    if hasattr(config, "to_json"):
        return json.loads(config.to_json())
    return json.loads(json.dumps(config))


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, path + "."))
        else:
            out[path] = v
    return out


def fingerprint(config, keys: tuple[str, ...] = FINGERPRINT_KEYS) -> dict[str, Any]:
    """The compatibility-deciding entries of ``config`` as ``{dotted.key: value}`` (JSON values); ``keys``:
    another job's list (the tiny teacher's, :data:`avatar_jax.teacher.tiny_training.FINGERPRINT_KEYS`)."""
    flat = _flatten(_plain(config))
    keep = {}
    for path, value in flat.items():
        if any(path == k or path.startswith(k + ".") for k in keys) and path not in COMPATIBLE_KEYS:
            keep[path] = value
    return keep


def incompatibilities(stored, current, keys: tuple[str, ...] = FINGERPRINT_KEYS) -> list[str]:
    """``"key: old -> new"`` for each fingerprint entry that differs. A key present on one side only
    (a config key added or removed by a code update) is not a difference: it held its default."""
    a, b = fingerprint(stored, keys), fingerprint(current, keys)
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]


def check_same_on_all_processes(text: str) -> None:
    """Only process 0 writes ``extra``, and every process restores it: a process whose ``extra``
    differs (e.g. a data iterator out of step) would silently resume from another's position."""
    if jax.process_count() == 1:
        return
    import hashlib

    import numpy as np
    from jax.experimental import multihost_utils

    digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], np.int32)
    digests = np.asarray(multihost_utils.process_allgather(digest))
    if not (digests == digests[0]).all():
        raise CheckpointError("checkpoint extra (data iterator state...) differs between processes; "
                              "every process must be at the same position when it saves")


class Checkpointer:
    """Save and restore ``(state, extra)`` steps of one run under ``workdir`` (see module doc).

    ``state``: any pytree of ``jax.Array`` (sharded or not). ``extra``: a JSON-able dict (the grain
    iterator's ``get_state()``, step counters, the fingerprint...). Every process of a multi-host
    job constructs it and calls ``save``/``restore`` at the same steps (orbax synchronises them).
    """

    def __init__(self, workdir: str, config, *, async_save: bool = True,
                 fingerprint_keys: tuple[str, ...] = FINGERPRINT_KEYS):
        self.workdir = epath.Path(os.path.abspath(workdir)) if "://" not in str(workdir) else epath.Path(workdir)
        self.config = config
        self.fingerprint_keys = tuple(fingerprint_keys)
        self._pending: int | None = None  # step of the last save started (for error messages)
        if self.workdir.exists() and not self.workdir.is_dir():
            raise InputError(f"workdir {str(self.workdir)!r} exists and is not a directory")
        self._check_compatible()
        self.every = int(config.train.checkpoint_every)  # 0: only forced saves
        keep = int(config.train.get("keep_checkpoints", 3))
        if self.every < 0:
            raise ConfigError(f"train.checkpoint_every must be >= 0 (0: only forced saves), got {self.every}")
        if keep < 1:
            raise ConfigError(f"train.keep_checkpoints must be >= 1, got {keep}")
        self._options = ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(max(self.every, 1)),
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # half-written steps of a killed run or a failed save
            create=True,
        )
        self._manager: ocp.CheckpointManager | None = None
        self._mgr()
        if jax.process_index() == 0:  # via a rename: other processes may be reading it right now
            tmp = self.workdir / f"{CONFIG_FILE}.tmp"
            tmp.write_text(json.dumps(_plain(config), indent=2, sort_keys=True))
            tmp.replace(self.workdir / CONFIG_FILE)

    def _mgr(self) -> ocp.CheckpointManager:
        """The orbax manager, (re)opened on demand: opening also removes half-written steps."""
        if self._manager is None:
            self._manager = ocp.CheckpointManager(self.workdir / CHECKPOINT_DIR,
                                                  item_names=("state", "extra", *OPTIONAL_ITEMS), options=self._options)
        return self._manager

    # -- compatibility -------------------------------------------------------------------------

    def _check_compatible(self) -> None:
        if not self._steps_on_disk():
            return
        cfg_path = self.workdir / CONFIG_FILE
        if not cfg_path.exists():
            raise InputError(f"workdir {str(self.workdir)!r} holds checkpoints but no {CONFIG_FILE}: "
                             "cannot tell whether they match this config; use a new workdir")
        try:
            stored = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"workdir {str(self.workdir)!r}: unreadable {CONFIG_FILE} ({_one_line(e)})") from e
        diffs = incompatibilities(stored, self.config, self.fingerprint_keys)
        if diffs:
            raise ConfigError(f"workdir {str(self.workdir)!r} holds checkpoints of an incompatible config "
                              f"({'; '.join(diffs)}); use a new workdir or the original config")

    # -- steps ---------------------------------------------------------------------------------

    def _steps_on_disk(self) -> list[int]:
        ckpt_dir = self.workdir / CHECKPOINT_DIR
        return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) if ckpt_dir.exists() else []

    def latest_step(self) -> int | None:
        """The newest complete step (half-written ones never count), or None."""
        return self._mgr().latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mgr().all_steps())

    def save(self, step: int, state, extra: Mapping[str, Any], *, force: bool = False,
             items: Mapping[str, Any] | None = None) -> bool:
        """Start an async save of ``step`` if it is on the interval (or ``force``); True if started.

        ``items``: pytrees saved with the step under names of :data:`OPTIONAL_ITEMS` (read back by
        :meth:`restore_item`).

        An earlier async save that failed is reported here (or in :meth:`wait`) as CheckpointError;
        the steps saved before it stay intact. Saving a step that already exists is a no-op.
        """
        self._raise_pending_error()
        if (not force and (self.every == 0 or not self._mgr().should_save(step))) or step in self._mgr().all_steps():
            return False
        try:
            text = json.dumps(extra, sort_keys=True)
        except TypeError as e:
            raise InputError(f"checkpoint extra must be JSON-able: {_one_line(e)}") from e
        check_same_on_all_processes(text)
        items = dict(items or {})
        unknown = sorted(set(items) - set(OPTIONAL_ITEMS))
        if unknown:
            raise InputError(f"checkpoint items {unknown} are not known; expected names of {OPTIONAL_ITEMS}")
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(dict(extra)),
                                  **{k: ocp.args.StandardSave(v) for k, v in items.items()})
        try:
            started = bool(self._mgr().save(step, args=args, force=True))
        except Exception as e:  # noqa: BLE001  (any failure of the write is reported the same way)
            raise self._save_error(step, e) from e
        if started:
            self._pending = step
        return started

    def wait(self) -> None:
        """Block until the pending async save is on disk; CheckpointError if it failed."""
        if self._manager is None:  # nothing open, nothing pending
            return
        try:
            self._mgr().wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._save_error(None, e) from e
        self._raise_pending_error()

    def _raise_pending_error(self) -> None:
        if self._manager is None:
            return
        try:
            self._mgr().check_for_errors()
        except Exception as e:  # noqa: BLE001
            raise self._save_error(None, e) from e

    def _save_error(self, step, e: BaseException) -> CheckpointError:
        step = self._pending if step is None else step
        # A failed orbax manager keeps re-raising its error, and its step cache may already miss
        # steps it meant to delete after this save: drop it. The next call opens a fresh one (after
        # the failed save's last writes have drained), which also removes the half-written step.
        manager, self._manager = self._manager, None
        try:
            if manager is not None:
                manager.close()
        except Exception:  # noqa: BLE001  (the error being reported, again)
            pass
        good = self._steps_on_disk()[-1:] or ["none"]
        return CheckpointError(f"saving checkpoint step {step} under {str(self.workdir / CHECKPOINT_DIR)!r} failed "
                               f"({_one_line(e)}); latest good checkpoint: step {good[0]}")

    def restore(self, step: int | None, abstract_state) -> tuple[Any, dict]:
        """``(state, extra)`` of ``step`` (None: the latest), placed as ``abstract_state`` says.

        ``abstract_state``: a pytree of ``jax.ShapeDtypeStruct`` with ``.sharding``; the arrays are
        read straight into those shardings, so a checkpoint restores onto any mesh shape.
        """
        self.wait()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise InputError(f"no checkpoint to restore under {str(self.workdir / CHECKPOINT_DIR)!r}")
        if step not in self._mgr().all_steps():
            raise InputError(f"no checkpoint of step {step} under {str(self.workdir / CHECKPOINT_DIR)!r}; "
                             f"have {self.all_steps()}")
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore())
        try:
            out = self._mgr().restore(step, args=args)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"restoring step {step} from {str(self.workdir / CHECKPOINT_DIR)!r} failed: "
                                  f"{_one_line(e)}") from e
        return out.state, dict(out.extra or {})

    def has_item(self, step: int, name: str) -> bool:
        """Whether complete step ``step`` holds the optional item ``name`` (saved by ``save(..., items=)``)."""
        return step in self._mgr().all_steps() and (self.workdir / CHECKPOINT_DIR / str(step) / name).exists()

    def restore_item(self, step: int, name: str, abstract) -> Any:
        """The optional item ``name`` of ``step``, placed as ``abstract`` (ShapeDtypeStructs with shardings)."""
        self.wait()
        if not self.has_item(step, name):
            raise InputError(f"checkpoint step {step} under {str(self.workdir / CHECKPOINT_DIR)!r} holds no {name!r}")
        try:
            out = self._mgr().restore(step, args=ocp.args.Composite(**{name: ocp.args.StandardRestore(abstract)}))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"restoring {name!r} of step {step} from {str(self.workdir / CHECKPOINT_DIR)!r} "
                                  f"failed: {_one_line(e)}") from e
        return out[name]

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Finish the pending save and release orbax's threads (a failed save raises CheckpointError)."""
        try:
            self.wait()
        finally:
            manager, self._manager = self._manager, None
            if manager is not None:
                manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:  # an error is already propagating: do not mask it with a save error
            try:
                self.close()
            except CheckpointError:
                pass


class PreemptionGuard:
    """Turns SIGTERM (a preemption notice) and SIGINT into a flag the loop polls between steps.

    The loop saves with ``force=True`` and exits cleanly once :attr:`requested` is True. A second
    SIGINT raises KeyboardInterrupt (an impatient Ctrl-C still stops the process). Use from the main
    thread; :meth:`restore` (or leaving the ``with`` block) puts the previous handlers back.

    Multi-host: schedulers signal hosts at slightly different times, and a host that stopped alone
    would hang the others in their next collective. So with several processes, :attr:`requested`
    is the OR of every process's flag (one tiny all-gather per read): every process must read it at
    the same points of the loop, and they all see the same answer.
    """

    def __init__(self, signals: tuple[int, ...] | None = None):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            raise ConfigError("PreemptionGuard must be created in the main thread (signal handlers live there)")
        self._signal = signal
        self._local = False
        self.signal_received: int | None = None
        sigs = (signal.SIGTERM, signal.SIGINT) if signals is None else tuple(signals)
        self._previous = {s: signal.signal(s, self._handle) for s in sigs}

    def _handle(self, signum, frame) -> None:
        if self._local and signum == self._signal.SIGINT:
            raise KeyboardInterrupt
        self._local = True
        self.signal_received = signum

    @property
    def local_requested(self) -> bool:
        """This process received a stop signal (no agreement with the others)."""
        return self._local

    @property
    def requested(self) -> bool:
        """True when any process of the job was asked to stop (see class doc)."""
        if jax.process_count() == 1:
            return self._local
        import numpy as np
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(self._local))
        return bool(np.asarray(flags).any())

    def restore(self) -> None:
        """Reinstall the handlers that were there before (default ones if they were set outside Python)."""
        for s, prev in self._previous.items():
            self._signal.signal(s, prev if prev is not None else self._signal.SIG_DFL)
        self._previous = {}

    def __enter__(self) -> PreemptionGuard:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()
