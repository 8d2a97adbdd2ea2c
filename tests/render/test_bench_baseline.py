"""``bench render``'s same-run comparison: a git revision's renderer extracted and timed against today's."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from avatar_jax.bench import render as bench_render
from avatar_jax.errors import InputError
from avatar_jax.render.scenes import person_scene

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]


@pytest.fixture(scope="module")
def snapshot_repo(tmp_path_factory):
    """A git repository holding one commit of today's kernels/ and avatar_jax/render/; returns (path, rev)."""
    repo = tmp_path_factory.mktemp("repo")
    root = bench_render.repository_root()
    for sub in bench_render.BASELINE_PATHS:
        shutil.copytree(os.path.join(root, sub), repo / sub, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([*GIT, "init", "-q", str(repo)], check=True)
    subprocess.run([*GIT, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-q", "-m", "snapshot"], check=True)
    rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                         text=True).stdout.strip()
    return str(repo), rev


def test_extract_refuses_a_folder_without_git_history(tmp_path):
    with pytest.raises(InputError, match="is not a git checkout"):
        bench_render.extract_revision("9256900", str(tmp_path / "out"), repo=str(tmp_path))


def test_extract_refuses_an_unknown_commit(snapshot_repo, tmp_path):
    repo, _ = snapshot_repo
    with pytest.raises(InputError, match="has no commit 'deadbeef'"):
        bench_render.extract_revision("deadbeef", str(tmp_path / "out"), repo=repo)


def test_interleaved_forward_of_an_extracted_revision(snapshot_repo, tmp_path):
    """Both workers render the same scene; the baseline's modules come from the extracted revision only."""
    repo, rev = snapshot_repo
    overlay = bench_render.extract_revision(rev, str(tmp_path / "base"), repo=repo)
    assert os.path.isfile(os.path.join(overlay, "kernels", "splat_xla.py"))
    scene_path = str(tmp_path / "scene.npz")
    np.savez(scene_path, **person_scene(np.random.default_rng(0), 500))
    workers = {"current": bench_render.RenderWorker("current", None, str(tmp_path)),
               "baseline": bench_render.RenderWorker("baseline", overlay, str(tmp_path))}
    try:
        assert workers["baseline"].render_file.startswith(overlay)
        assert workers["baseline"].kernels_file.startswith(overlay)
        assert not workers["current"].kernels_file.startswith(overlay)
        out = bench_render.compare_forward(workers, scene_path, 32, 2, 3, str(tmp_path))
    finally:
        for w in workers.values():
            w.close()
    assert all(w.proc.returncode == 0 for w in workers.values())
    for name in ("current", "baseline"):
        assert len(out[name]["cpu_s"]) == 3 and min(out[name]["cpu_s"]) > 0
        assert out[name]["capacity"] % 1024 == 0
    assert out["max_abs_diff"] == 0.0  # same code on both sides: the same image
    summary = bench_render._baseline_summary(out)
    assert summary["speedup_vs_baseline_cpu_min"] == pytest.approx(
        min(out["baseline"]["cpu_s"]) / min(out["current"]["cpu_s"]))


def test_worker_failure_is_reported_with_its_name(tmp_path):
    worker = bench_render.RenderWorker("current", None, str(tmp_path))
    try:
        with pytest.raises(RuntimeError, match="worker 'current' failed: .*time before setup"):
            worker.call("time", repeats=1)
    finally:
        worker.close()
