"""SE(3) integration throughput: ``lax.scan`` over frames vs an unrolled Python loop of compositions."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from avatar_jax.bench.timing import time_fn
from avatar_jax.geometry import se3


def run(config, out_dir) -> dict:
    del out_dir
    results = {"rows": []}
    print(f"{'frames':>7} {'particles':>10} {'scan ms':>9} {'loop ms':>9} {'Mtransforms/s':>14}")
    sizes = [(10, 16)] if config.bench.quick else [(25, 64), (100, 256), (250, 1024)]
    for frames, particles in sizes:
        twists = 0.05 * jax.random.normal(jax.random.key(config.seed), (frames, particles, 6))
        init = se3.identity((particles,))
        scan_fn = jax.jit(se3.integrate)

        def loop(tw, t0):
            out, cur = [], t0
            for t in range(tw.shape[0]):
                cur = se3.exp(tw[t]) @ cur
                out.append(cur)
            return jnp.stack(out)

        loop_fn = jax.jit(loop)
        scan_t = time_fn(scan_fn, twists, init)["median"]
        loop_t = time_fn(loop_fn, twists, init, repeats=3)["median"]
        rate = frames * particles / scan_t / 1e6
        print(f"{frames:>7} {particles:>10} {scan_t * 1e3:>9.2f} {loop_t * 1e3:>9.2f} {rate:>14.2f}")
        results["rows"].append(
            dict(frames=frames, particles=particles, scan_s=scan_t, loop_s=loop_t, transforms_per_s=rate * 1e6)
        )
    return results
