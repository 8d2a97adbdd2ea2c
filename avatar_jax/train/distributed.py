"""Multi-host start-up: ``jax.distributed.initialize`` from the launch environment, before any JAX call.

How the processes of one job find each other, first match wins:

1. explicit: ``coordinator/num_processes/process_id`` arguments (CLI flags) or the environment
   variables ``AVATAR_JAX_COORDINATOR`` (``host:port`` of process 0), ``AVATAR_JAX_NUM_PROCESSES``,
   ``AVATAR_JAX_PROCESS_ID``: multi-node GPU jobs under any launcher, and local CPU processes;
2. SLURM: inside an ``srun`` step of more than one task (jax's SLURM detector: one task per GPU,
   the coordinator is the first node of the step);
3. TPU: a Cloud TPU VM or GKE TPU pod (jax reads the worker list from the TPU metadata/env itself);
4. ``AVATAR_JAX_DISTRIBUTED=auto`` forces jax's own detection (Open MPI, k8s...); ``=off`` disables all;
5. otherwise one process: nothing to initialise.

On CPU the collectives between processes go through gloo (``jax_cpu_collectives_implementation``),
which is what lets two local processes stand in for two hosts in tests.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
from collections.abc import Mapping

from avatar_jax.errors import ConfigError

ENV_COORDINATOR = "AVATAR_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "AVATAR_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "AVATAR_JAX_PROCESS_ID"
ENV_MODE = "AVATAR_JAX_DISTRIBUTED"  # auto | off (unset: detect as in the module doc)

# Environment a TPU pod worker carries (GKE sets the host list; multislice sets megascale).
_TPU_ENV = ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "MEGASCALE_COORDINATOR_ADDRESS")
# What jax's SLURM detector reads (it is used only when all are there, i.e. inside `srun`).
_SLURM_ENV = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
_GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips on a Cloud TPU VM


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """How this process joins the job. ``method``: single | explicit | slurm | tpu | auto."""

    method: str
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    @property
    def multi_process(self) -> bool:
        return self.method != "single"


def _int(name: str, value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _on_tpu_vm() -> bool:
    if importlib.util.find_spec("libtpu") is None:
        return False
    for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(path) as f:
                if f.read().strip() == _GOOGLE_PCI_VENDOR:
                    return True
        except OSError:
            continue
    return False


def detect(env: Mapping[str, str] | None = None, *, coordinator: str | None = None,
           num_processes: int | None = None, process_id: int | None = None) -> LaunchSpec:
    """The :class:`LaunchSpec` for this process; arguments override the ``AVATAR_JAX_*`` variables.

    Raises ConfigError for a partial or inconsistent explicit setting (one line, naming the variable).
    """
    env = os.environ if env is None else env
    mode = env.get(ENV_MODE, "").strip().lower()
    if mode not in ("", "auto", "off"):
        raise ConfigError(f"{ENV_MODE} must be 'auto' or 'off', got {mode!r}")
    if mode == "off":
        return LaunchSpec("single")
    coordinator = coordinator or env.get(ENV_COORDINATOR) or None
    num = num_processes if num_processes is not None else env.get(ENV_NUM_PROCESSES)
    pid = process_id if process_id is not None else env.get(ENV_PROCESS_ID)
    given = {ENV_COORDINATOR: coordinator, ENV_NUM_PROCESSES: num, ENV_PROCESS_ID: pid}
    if any(v not in (None, "") for v in given.values()):
        missing = [k for k, v in given.items() if v in (None, "")]
        num_i = _int(ENV_NUM_PROCESSES, num) if num not in (None, "") else None
        if num_i == 1 and (pid in (None, "") or _int(ENV_PROCESS_ID, pid) == 0):
            return LaunchSpec("single")  # an explicit one-process job needs no coordinator
        if missing:
            raise ConfigError(f"multi-process launch needs {', '.join(given)}; missing {', '.join(missing)}")
        pid_i = _int(ENV_PROCESS_ID, pid)
        if num_i < 1 or not 0 <= pid_i < num_i:
            raise ConfigError(f"process id {pid_i} out of range for {num_i} processes")
        host, sep, port = str(coordinator).rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"{ENV_COORDINATOR} must be host:port, got {coordinator!r}")
        return LaunchSpec("explicit", str(coordinator), num_i, pid_i)
    if all(k in env for k in _SLURM_ENV):
        # the tasks of this job step (`srun`); a batch script's own shell is a one-task step
        tasks = _int("SLURM_STEP_NUM_TASKS", env.get("SLURM_STEP_NUM_TASKS", env["SLURM_NTASKS"]))
        if tasks > 1:
            return LaunchSpec("slurm", num_processes=tasks, process_id=_int("SLURM_PROCID", env["SLURM_PROCID"]))
    if mode == "auto":
        return LaunchSpec("auto")
    if any(k in env for k in _TPU_ENV) or (env is os.environ and _on_tpu_vm()):
        return LaunchSpec("tpu")
    return LaunchSpec("single")


def initialize_from_env(*, coordinator: str | None = None, num_processes: int | None = None,
                        process_id: int | None = None, env: Mapping[str, str] | None = None,
                        initialization_timeout: int = 300) -> LaunchSpec:
    """Join the multi-host job this process was launched into (no-op for one process); returns the spec.

    Must run before anything touches a JAX backend. Calling it again after a successful
    initialisation is a no-op.
    """
    import jax

    spec = detect(env, coordinator=coordinator, num_processes=num_processes, process_id=process_id)
    if not spec.multi_process or is_initialized():
        return spec
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs: dict = {"initialization_timeout": initialization_timeout}
    if spec.method == "explicit":
        kwargs.update(coordinator_address=spec.coordinator, num_processes=spec.num_processes,
                      process_id=spec.process_id)
    elif spec.method == "slurm":
        kwargs["cluster_detection_method"] = "slurm"
    try:
        jax.distributed.initialize(**kwargs)
    except RuntimeError as e:  # e.g. a backend already started, or the coordinator never answered
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"jax.distributed.initialize ({spec.method}) failed: {first}") from e
    return spec


def is_initialized() -> bool:
    """True once this process has joined a multi-process job."""
    import jax

    return jax.distributed.is_initialized()


def shutdown() -> None:
    """Leave the job (waits for the other processes); a no-op for one process."""
    import jax

    if is_initialized():
        jax.distributed.shutdown()


def add_arguments(parser) -> None:
    """The multi-host flags of a command (each overrides its ``AVATAR_JAX_*`` variable)."""
    g = parser.add_argument_group("multi-host (default: from the environment, see avatar_jax.train.distributed)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help=f"process 0's address (${ENV_COORDINATOR})")
    g.add_argument("--num-processes", type=int, default=None, metavar="N",
                   help=f"processes in the job (${ENV_NUM_PROCESSES})")
    g.add_argument("--process-id", type=int, default=None, metavar="I",
                   help=f"this process, 0..N-1 (${ENV_PROCESS_ID})")


def launch_kwargs(args) -> dict:
    """``coordinator/num_processes/process_id`` from parsed :func:`add_arguments` flags."""
    return {k: getattr(args, k, None) for k in ("coordinator", "num_processes", "process_id")}
