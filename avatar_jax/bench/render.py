"""Renderer throughput: tiled XLA path and Pallas kernels vs a naive dense splatter, same scene, same run.

Scene: 20k small Gaussians placed on a standing figure (:func:`avatar_jax.render.scenes.person_scene`)
seen from 1 or 8 cameras on a turntable, at 256x256 and 512x512. For every case we time the forward
pass and forward+backward (gradient of a weighted image sum w.r.t. all Gaussian parameters), as
wall-clock medians and as process CPU time (minimum over runs; steadier when other jobs share the
machine). "Pairs" are Gaussian-pixel pairs evaluated: tile-list entries x pixels per tile for the
tiled renderers, N x H x W x cameras for the dense one; "composited" is the share of the tiled
pairs that pass alpha >= 1/255 before termination. Pallas is timed only on a GPU/TPU (on CPU it
would run in interpret mode, which measures the interpreter, not the kernel).

The speed-up column compares today's XLA forward with the renderer of another git revision
(``bench.render_baseline``, default 9256900: the renderer before issue 10) in the same run: that
revision's ``kernels/`` and ``avatar_jax/render/`` are extracted with ``git archive`` into a temporary
folder, and two worker processes (:mod:`avatar_jax.bench.render_worker`), one per renderer, time the
same jitted forward on the same scene and cameras alternately (A, B, A, B, ...; the idle one waits on
its pipe). The ratio is of CPU-time minima (and of medians), so load from other jobs hits both alike.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import avatar_jax
from avatar_jax.errors import InputError
from avatar_jax.geometry import orbit
from avatar_jax.kernels import splat_xla
from avatar_jax.render import binning, intersection_count, render, renderer
from avatar_jax.render.dense import render_dense
from avatar_jax.render.scenes import person_scene

NUM_GAUSSIANS = 20_000
SIZES = (256, 512)
CAMERAS = (1, 8)
# The dense baseline evaluates every Gaussian at every pixel (minutes on a 2-core CPU); one case shows
# the rate, which does not change with size or cameras.
DENSE_CASES = {(256, 1)}
BASELINE_ROUNDS = 7  # interleaved forward runs per renderer and case (each a CPU-time sample)
BASELINE_PATHS = ("kernels", "avatar_jax/render")  # what a baseline revision contributes


def _time(fn, *args, repeats: int) -> tuple[float, float]:
    """Wall-clock median and CPU-time minimum of ``fn(*args)`` over ``repeats`` runs (after a compile run)."""
    jax.block_until_ready(fn(*args))
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), min(cpu)


def _measure(fn, cam, args, weights, repeats, **kwargs):
    fwd = jax.jit(lambda *a: fn(*a, cam, **kwargs).rgb)
    loss = lambda *a: jnp.sum(fn(*a, cam, **kwargs).rgb * weights)  # noqa: E731
    both = jax.jit(jax.value_and_grad(loss, argnums=range(5)))
    return _time(fwd, *args, repeats=repeats), _time(both, *args, repeats=repeats)


def _pair_counts(args, cam, capacity: int) -> tuple[int, int]:
    """(evaluated, composited) Gaussian-pixel pairs of the XLA path for this scene and camera(s)."""
    _, viewmats, Ks = renderer.camera_arrays(cam)
    grid = binning.TileGrid(cam.width, cam.height, viewmats.shape[0], renderer.TILE_SIZE["xla"])
    chunk = renderer.CHUNK["xla"]

    @jax.jit
    def counts(*a):
        feats, radii, depths = renderer.project_instances(*a, viewmats, Ks, cam.width, cam.height)
        layout = binning.bin_and_sort(feats[:, 0:2], radii, feats[:, 2:5], feats[:, 5], depths, grid,
                                      capacity=capacity, chunk=chunk)
        slot_feats = jnp.where(layout.slot_valid[..., None], feats[layout.slot_gid], 0.0)
        done = splat_xla.composited_pairs(slot_feats, layout.chunk_tile, layout.chunk_k <= 0, layout.n_chunks,
                                          tiles_x=grid.tiles_x, tiles_per_camera=grid.tiles_per_camera,
                                          batch=renderer.XLA_BATCH, tile_size=grid.tile)
        return jnp.sum(layout.slot_valid) * grid.pixels, done

    evaluated, done = counts(*args)
    return int(evaluated), int(done)


def repository_root() -> str:
    """The git work tree this package was imported from (an editable install in a checkout)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(avatar_jax.__file__)))


def extract_revision(rev: str, dest: str, repo: str | None = None) -> str:
    """Write revision ``rev``'s ``kernels/`` and ``avatar_jax/render/`` under ``dest`` (``git archive``).

    Returns ``dest``. Raises :class:`InputError` when there is no git, no checkout or no such commit.
    """
    repo = repo or repository_root()
    where = f"the baseline renderer (bench.render_baseline={rev!r}) is read from git history"

    def git(*args, **kw):
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, check=False, **kw)

    try:
        inside = git("rev-parse", "--is-inside-work-tree", text=True)
    except FileNotFoundError:
        raise InputError(f"{where}, but no git executable was found; install git or set "
                         "bench.render_baseline='' to skip the comparison") from None
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        raise InputError(f"{where}, but {repo} is not a git checkout; run from a clone with history or set "
                         "bench.render_baseline='' to skip the comparison")
    if git("cat-file", "-e", f"{rev}^{{commit}}").returncode != 0:
        raise InputError(f"{where}, but this checkout has no commit {rev!r} (a shallow clone?); fetch the history "
                         "or set bench.render_baseline to a commit it has")
    archive = git("archive", "--format=tar", rev, *BASELINE_PATHS)
    if archive.returncode != 0:
        raise InputError(f"{where}, but `git archive {rev}` failed: {archive.stderr.decode().strip()}; expected "
                         f"{' and '.join(BASELINE_PATHS)} in that revision")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


class RenderWorker:
    """One :mod:`avatar_jax.bench.render_worker` process (``overlay``: an extracted revision, or None for today's)."""

    def __init__(self, name: str, overlay: str | None, log_dir: str):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in close())
        cmd = [sys.executable, "-m", "avatar_jax.bench.render_worker"] + (["--overlay", overlay] if overlay else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True)
        ready = self._read()
        self.render_file, self.kernels_file = ready["render_file"], ready["kernels_file"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self._log.flush()
            with open(self.log_path) as f:
                tail = f.read()[-2000:]
            raise RuntimeError(f"bench render: worker {self.name!r} exited early; its log ends with:\n{tail}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"bench render: worker {self.name!r} failed: {reply['error']}")
        return reply

    def call(self, cmd: str, **kwargs) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def compare_forward(workers: dict[str, RenderWorker], scene_path: str, size: int, cams: int, rounds: int,
                    tmp: str) -> dict:
    """Time the workers' forwards alternately (one run each per round) on one case; CPU and wall samples each.

    Returns per worker ``cpu_s``/``wall_s`` lists and ``capacity``, plus ``max_abs_diff`` between their images.
    """
    out = {}
    for name, w in workers.items():
        out[name] = w.call("setup", scene=scene_path, size=size, cameras=cams)
        out[name].update(cpu_s=[], wall_s=[])
    for _ in range(rounds):
        for name, w in workers.items():
            sample = w.call("time", repeats=1)
            out[name]["cpu_s"] += sample["cpu_s"]
            out[name]["wall_s"] += sample["wall_s"]
    images = [np.load(w.call("image", path=os.path.join(tmp, f"{name}.npy"))["path"]) for name, w in workers.items()]
    out["max_abs_diff"] = float(np.max(np.abs(images[0] - images[-1])))
    return out


def _baseline_summary(cmp: dict) -> dict:
    cur, base = cmp["current"], cmp["baseline"]
    return dict(
        baseline_forward_cpu_min_s=min(base["cpu_s"]), current_forward_cpu_min_s=min(cur["cpu_s"]),
        baseline_forward_cpu_median_s=statistics.median(base["cpu_s"]),
        current_forward_cpu_median_s=statistics.median(cur["cpu_s"]),
        speedup_vs_baseline_cpu_min=min(base["cpu_s"]) / min(cur["cpu_s"]),
        speedup_vs_baseline_cpu_median=statistics.median(base["cpu_s"]) / statistics.median(cur["cpu_s"]),
        speedup_vs_baseline_wall_median=statistics.median(base["wall_s"]) / statistics.median(cur["wall_s"]),
        baseline_capacity=base["capacity"], baseline_max_abs_diff=cmp["max_abs_diff"],
        baseline_samples=dict(current_cpu_s=cur["cpu_s"], baseline_cpu_s=base["cpu_s"]),
    )


def run(config, out_dir) -> dict:
    del out_dir
    seed = getattr(config, "seed", 0)
    bench = config.bench if "bench" in config else {}
    quick = bool(bench.get("quick", False))
    # Quick (smoke) runs skip the baseline: it needs git history and two extra JAX processes.
    rev = "" if quick else str(bench.get("render_baseline", "9256900") or "")
    num_gaussians, sizes, cameras = (2_000, (64,), (1, 2)) if quick else (NUM_GAUSSIANS, SIZES, CAMERAS)
    dense_cases = {(64, 1)} if quick else DENSE_CASES
    if not bench.get("render_dense", True):
        dense_cases = set()
    scene = person_scene(np.random.default_rng(seed), num_gaussians)
    args = tuple(jnp.asarray(scene[k]) for k in ("means", "quats", "scales", "opacities", "colors"))
    backends = ["xla"] + (["pallas"] if jax.default_backend() in ("gpu", "tpu") else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_render_") as tmp:
        workers = {}
        try:
            if rev:
                scene_path = os.path.join(tmp, "scene.npz")
                np.savez(scene_path, **scene)
                overlay = extract_revision(rev, os.path.join(tmp, "baseline"))
                workers = {"current": RenderWorker("current", None, tmp),
                           "baseline": RenderWorker("baseline", overlay, tmp)}
                print(f"forward vs {rev}: {BASELINE_ROUNDS} interleaved runs per case "
                      f"({workers['baseline'].render_file} vs {workers['current'].render_file})")
            rows = _run_cases(args, sizes, cameras, dense_cases, backends, num_gaussians, workers,
                              scene_path if rev else None, tmp)
        finally:
            for w in workers.values():
                w.close()
    return {"num_gaussians": num_gaussians, "quick": quick, "baseline_rev": rev or None, "rows": rows,
            "note": "pallas is timed only on GPU/TPU; dense only at 256x256, 1 camera (minutes on CPU); "
                    "'vs base' = forward CPU-time speed-up over the baseline revision's renderer, timed "
                    "interleaved in the same run (min of CPU times; medians in the rows)"}


def _run_cases(args, sizes, cameras, dense_cases, backends, num_gaussians, workers, scene_path, tmp) -> list:
    rows = []
    print(f"{'size':>5} {'cams':>4} {'backend':>7} {'fwd ms':>8} {'f+b ms':>8} {'f+b/f':>6} {'fwd cpu':>8} "
          f"{'f+b cpu':>8} {'cpu f+b/f':>9} {'base cpu':>8} {'vs base':>7} {'pairs':>11} {'composited':>10}")
    for size in sizes:
        for cams in cameras:
            cam = orbit(cams, radius=3.0, width=size, height=size, fov_y_deg=40.0, elevation_deg=5.0)
            weights = jnp.asarray(np.random.default_rng(1).uniform(size=(cams, size, size, 3)).astype(np.float32))
            if cams == 1:
                cam = cam[0]
                weights = weights[0]
            cases = []
            for b in backends:
                hits = intersection_count(*args[:3], cam, args[3], backend=b)
                capacity = -(-hits // 1024) * 1024  # what a training step passes: the count with a little slack
                pairs, share = None, None
                if b == "xla":
                    pairs, done = _pair_counts(args, cam, capacity)
                    share = done / max(pairs, 1)
                cases.append((b, render, dict(backend=b, capacity=capacity), hits, pairs, share, 5))
            if (size, cams) in dense_cases:
                cases.append(("dense", render_dense, {}, None, num_gaussians * size * size * cams, None, 1))
            for name, fn, kwargs, hits, pairs, share, repeats in cases:
                (fwd, fwd_cpu), (both, both_cpu) = _measure(fn, cam, args, weights, repeats, **kwargs)
                row = dict(size=size, cameras=cams, backend=name, forward_s=fwd, forward_backward_s=both,
                           forward_cpu_s=fwd_cpu, forward_backward_cpu_s=both_cpu, ratio=both / fwd,
                           ratio_cpu=both_cpu / fwd_cpu, pairs=pairs, composited_share=share,
                           intersections=hits)
                base_ms, vs = "-", "-"
                if name == "xla" and workers:
                    row.update(_baseline_summary(compare_forward(workers, scene_path, size, cams, BASELINE_ROUNDS,
                                                                 tmp)))
                    base_ms = f"{row['baseline_forward_cpu_min_s'] * 1e3:.1f}"
                    vs = f"{row['speedup_vs_baseline_cpu_min']:.2f}x"
                rows.append(row)
                print(f"{size:>5} {cams:>4} {name:>7} {fwd * 1e3:>8.1f} {both * 1e3:>8.1f} {both / fwd:>6.2f} "
                      f"{fwd_cpu * 1e3:>8.1f} {both_cpu * 1e3:>8.1f} {both_cpu / fwd_cpu:>9.2f} {base_ms:>8} "
                      f"{vs:>7} {pairs or 0:>11} {'' if share is None else f'{100 * share:.1f}%':>10}", flush=True)
                if name == "xla" and workers:
                    today = row["current_forward_cpu_min_s"] * 1e3
                    print(f"{'':>5} {'':>4} interleaved forward CPU min: today {today:.1f} ms, baseline "
                          f"{row['baseline_forward_cpu_min_s'] * 1e3:.1f} ms; medians "
                          f"{row['speedup_vs_baseline_cpu_median']:.2f}x; images differ by "
                          f"{row['baseline_max_abs_diff']:.1e}", flush=True)
            by = {r["backend"]: r for r in rows if r["size"] == size and r["cameras"] == cams}
            if "dense" in by:
                speed = by["dense"]["forward_backward_s"] / by["xla"]["forward_backward_s"]
                by["xla"]["speedup_vs_dense_forward_backward"] = speed
                print(f"{'':>5} {'':>4} xla vs dense, forward+backward: {speed:.1f}x faster")
    return rows
