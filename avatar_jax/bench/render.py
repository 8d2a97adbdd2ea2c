"""Renderer throughput: tiled XLA path and Pallas kernels vs a naive dense splatter, same scene, same run.

Scene: 20k small Gaussians placed on a standing figure (:func:`avatar_jax.render.scenes.person_scene`)
seen from 1 or 8 cameras on a turntable, at 256x256 and 512x512. For every case we time the forward
pass and forward+backward (gradient of a weighted image sum w.r.t. all Gaussian parameters), as
wall-clock medians and as process CPU time (minimum over runs; steadier when other jobs share the
machine). "Pairs" are Gaussian-pixel pairs evaluated: tile-list entries x pixels per tile for the
tiled renderers, N x H x W x cameras for the dense one; "composited" is the share of the tiled
pairs that pass alpha >= 1/255 before termination. Pallas is timed only on a GPU/TPU (on CPU it
would run in interpret mode, which measures the interpreter, not the kernel).

The speed-up column compares the XLA forward with the renderer as it was before issue 10 (commit
9256900), measured on this 2-core machine with this scene: :data:`BEFORE_FORWARD_S`.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

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
# XLA forward of the renderer before issue 10 (commit 9256900), (size, cameras) -> seconds: wall-clock
# medians at the start of the work (load ~2 on the 2 cores) and process CPU time minima measured later
# under heavier load (capacity rounded up to a multiple of 1024, as below).
BEFORE_FORWARD_S = {(256, 1): 0.070, (512, 1): 0.199, (256, 8): 0.550, (512, 8): 2.30}
BEFORE_FORWARD_CPU_S = {(256, 1): 0.103, (512, 1): 0.204, (256, 8): 0.668, (512, 8): 1.281}


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


def run(config, out_dir) -> dict:
    del out_dir
    seed = getattr(config, "seed", 0)
    quick = bool(config.bench.quick) if "bench" in config else False
    num_gaussians, sizes, cameras = (2_000, (64,), (1, 2)) if quick else (NUM_GAUSSIANS, SIZES, CAMERAS)
    dense_cases = {(64, 1)} if quick else DENSE_CASES
    scene = person_scene(np.random.default_rng(seed), num_gaussians)
    args = tuple(jnp.asarray(scene[k]) for k in ("means", "quats", "scales", "opacities", "colors"))
    backends = ["xla"] + (["pallas"] if jax.default_backend() in ("gpu", "tpu") else [])
    rows = []
    print(f"{'size':>5} {'cams':>4} {'backend':>7} {'fwd ms':>8} {'f+b ms':>8} {'f+b/f':>6} {'fwd cpu':>8} "
          f"{'f+b cpu':>8} {'cpu f+b/f':>9} {'vs before':>9} {'pairs':>11} {'composited':>10}")
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
                before = BEFORE_FORWARD_CPU_S.get((size, cams)) if name == "xla" else None
                if name == "xla":
                    row["speedup_vs_before_forward_wall"] = BEFORE_FORWARD_S[(size, cams)] / fwd \
                        if (size, cams) in BEFORE_FORWARD_S else None
                    row["speedup_vs_before_forward_cpu"] = before / fwd_cpu if before else None
                rows.append(row)
                vs = f"{before / fwd_cpu:.1f}x" if before else "-"
                print(f"{size:>5} {cams:>4} {name:>7} {fwd * 1e3:>8.1f} {both * 1e3:>8.1f} {both / fwd:>6.2f} "
                      f"{fwd_cpu * 1e3:>8.1f} {both_cpu * 1e3:>8.1f} {both_cpu / fwd_cpu:>9.2f} {vs:>9} "
                      f"{pairs or 0:>11} {'' if share is None else f'{100 * share:.1f}%':>10}", flush=True)
            by = {r["backend"]: r for r in rows if r["size"] == size and r["cameras"] == cams}
            if "dense" in by:
                speed = by["dense"]["forward_backward_s"] / by["xla"]["forward_backward_s"]
                by["xla"]["speedup_vs_dense_forward_backward"] = speed
                print(f"{'':>5} {'':>4} xla vs dense, forward+backward: {speed:.1f}x faster")
    return {"num_gaussians": num_gaussians, "quick": quick, "rows": rows,
            "note": "pallas is timed only on GPU/TPU; dense only at 256x256, 1 camera (minutes on CPU); "
                    "'vs before' = CPU-time forward speed-up over the renderer before issue 10"}
