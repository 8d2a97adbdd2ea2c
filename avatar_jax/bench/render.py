"""Renderer throughput: tiled XLA path and Pallas kernels vs a naive dense splatter, same scene, same run.

Scene: 20k small Gaussians placed on a standing figure (:func:`avatar_jax.render.scenes.person_scene`)
seen from 1 or 8 cameras on a turntable, at 256x256 and 512x512. For every case we time the forward
pass and forward+backward (gradient of a weighted image sum w.r.t. all Gaussian parameters).
"Pairs" are Gaussian-pixel pairs evaluated: tile intersections x 256 for the tiled renderers,
N x H x W x cameras for the dense one. Pallas is timed only on a GPU/TPU (on CPU it would run in
interpret mode, which measures the interpreter, not the kernel).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.bench.timing import time_fn
from avatar_jax.geometry import orbit
from avatar_jax.render import intersection_count, render
from avatar_jax.render.dense import render_dense
from avatar_jax.render.scenes import person_scene

NUM_GAUSSIANS = 20_000
SIZES = (256, 512)
CAMERAS = (1, 8)
# The dense baseline evaluates every Gaussian at every pixel; 8 cameras at 512^2 would take many
# minutes on a 2-core CPU, so that one case is left out (the per-pair rate does not change with B).
DENSE_CASES = {(256, 1), (256, 8), (512, 1)}


def _loss_fn(fn, cam, weights, **kwargs):
    def loss(means, quats, scales, opacities, colors):
        return jnp.sum(fn(means, quats, scales, opacities, colors, cam, **kwargs).rgb * weights)

    return loss


def _measure(fn, cam, scene, weights, repeats, **kwargs):
    args = tuple(jnp.asarray(scene[k]) for k in ("means", "quats", "scales", "opacities", "colors"))
    fwd = jax.jit(lambda *a: fn(*a, cam, **kwargs).rgb)
    bwd = jax.jit(jax.value_and_grad(_loss_fn(fn, cam, weights, **kwargs), argnums=range(5)))
    return time_fn(fwd, *args, repeats=repeats)["median"], time_fn(bwd, *args, repeats=repeats)["median"]


def run(config, out_dir) -> dict:
    del out_dir
    seed = getattr(config, "seed", 0)
    quick = bool(config.bench.quick) if "bench" in config else False
    num_gaussians, sizes, cameras = (2_000, (64,), (1, 2)) if quick else (NUM_GAUSSIANS, SIZES, CAMERAS)
    dense_cases = {(64, 1), (64, 2)} if quick else DENSE_CASES
    scene = person_scene(np.random.default_rng(seed), num_gaussians)
    backends = ["xla"] + (["pallas"] if jax.default_backend() in ("gpu", "tpu") else [])
    rows = []
    header = f"{'size':>5} {'cams':>4} {'backend':>7} {'fwd ms':>10} {'fwd+bwd ms':>11} {'Mpairs/s fwd':>13} " \
             f"{'Mpairs/s f+b':>13} {'pairs':>12}"
    print(header)
    for size in sizes:
        for cams in cameras:
            cam = orbit(cams, radius=3.0, width=size, height=size, fov_y_deg=40.0, elevation_deg=5.0)
            weights = jnp.asarray(np.random.default_rng(1).uniform(size=(cams, size, size, 3)).astype(np.float32))
            if cams == 1:
                cam = cam[0]
                weights = weights[0]
            hits = intersection_count(scene["means"], scene["quats"], scene["scales"], cam)
            capacity = 1 << (hits - 1).bit_length()
            cases = [(b, render, dict(backend=b, capacity=capacity), hits * 256, 5) for b in backends]
            if (size, cams) in dense_cases:
                cases.append(("dense", render_dense, {}, num_gaussians * size * size * cams, 1))
            for name, fn, kwargs, pairs, repeats in cases:
                fwd, both = _measure(fn, cam, scene, weights, repeats, **kwargs)
                row = dict(size=size, cameras=cams, backend=name, forward_s=fwd, forward_backward_s=both,
                           pairs=int(pairs), pairs_per_s_forward=pairs / fwd, pairs_per_s_forward_backward=pairs / both,
                           intersections=int(hits), capacity=capacity)
                rows.append(row)
                print(f"{size:>5} {cams:>4} {name:>7} {fwd * 1e3:>10.1f} {both * 1e3:>11.1f} "
                      f"{pairs / fwd / 1e6:>13.1f} {pairs / both / 1e6:>13.1f} {pairs:>12}", flush=True)
            by = {r["backend"]: r for r in rows if r["size"] == size and r["cameras"] == cams}
            if "dense" in by:
                speed = by["dense"]["forward_backward_s"] / by["xla"]["forward_backward_s"]
                by["xla"]["speedup_vs_dense_forward_backward"] = speed
                print(f"{'':>5} {'':>4} xla vs dense, forward+backward: {speed:.1f}x faster")
    return {"num_gaussians": num_gaussians, "quick": quick, "rows": rows,
            "note": "pallas is timed only on GPU/TPU; dense skipped at 512x512 x 8 cameras (minutes on CPU)"}
