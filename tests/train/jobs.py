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


def launch(args: list[str], *, devices: int = 8, env: dict | None = None, log_path: str) -> subprocess.Popen:
    """``python -m tests.train.tiny_job ARGS`` from the repo root on ``devices`` simulated CPU devices."""
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu",
                "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(env or {})}
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.train.tiny_job", *args], cwd=REPO, env=full_env,
                                stdout=out, stderr=subprocess.STDOUT)
    proc.log_path = log_path
    return proc


def wait_for(path: str, procs: list[subprocess.Popen], timeout: float = 180.0) -> None:
    """Block until ``path`` exists; fail early (with the job's output) if a process exits first."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"job exited with {p.returncode} before {path} appeared:\n{output(p)}")
        if time.monotonic() > deadline:
            for p in procs:
                p.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


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
