"""Launching and watching training subprocesses for the resume and multi-host tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def launch(args: list[str], *, devices: int = 8, env: dict | None = None, log_path: str,
           module: str = "tests.train.tiny_job") -> subprocess.Popen:
    """``python -m MODULE ARGS`` from the repo root on ``devices`` simulated CPU devices."""
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu",
                "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(env or {})}
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=full_env,
                                stdout=out, stderr=subprocess.STDOUT)
    proc.log_path = log_path
    return proc


def wait_until(ready, procs: list[subprocess.Popen], timeout: float = 300.0, what: str = "the condition") -> None:
    """Block until ``ready()``; fail early (with the job's output) if a process exits first."""
    deadline = time.monotonic() + timeout
    while not ready():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"job exited with {p.returncode} before {what}:\n{output(p)}")
        if time.monotonic() > deadline:
            for p in procs:
                p.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_for(path: str, procs: list[subprocess.Popen], timeout: float = 180.0) -> None:
    """Block until ``path`` exists (see :func:`wait_until`)."""
    wait_until(lambda: os.path.exists(path), procs, timeout, f"{path} appeared")


def finish(p: subprocess.Popen, timeout: float = 180.0) -> int:
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        raise AssertionError(f"job did not finish in {timeout} s:\n{output(p)}") from None


def output(p: subprocess.Popen) -> str:
    """The end of a job's combined stdout/stderr."""
    with open(p.log_path) as f:
        return f.read()[-4000:]


def summary(log_path: str) -> dict:
    with open(log_path) as f:
        lines = [ln for ln in f if ln.startswith("SUMMARY ")]
    assert lines, f"no SUMMARY line in {log_path}"
    return json.loads(lines[-1][len("SUMMARY "):])


def steps_log(workdir: str, process: int = 0) -> dict[int, dict]:
    """Last record of each step in ``WORKDIR/log.<process>.jsonl`` (a resumed run redoes steps)."""
    out: dict[int, dict] = {}
    with open(os.path.join(workdir, f"log.{process}.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            out[rec["step"]] = rec
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
