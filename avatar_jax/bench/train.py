"""Train-step throughput: step time, frames/s and compiled per-device memory at 1 and 8 devices.

Each device count runs in its own subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=N``
must be set before JAX starts), on the config's sizes: ``train.batch_size`` sequences of
``train.seq_len`` frames at ``data.synthetic.size`` pixels, ``model.num_gaussians`` Gaussians of the
synthetic avatar, mesh ``data=N``. Batches are random frames, keypoints and audio (the loader has its
own benchmark), so the numbers are the step alone: model, renderer forward + backward, losses, AdamW.
Ratios between the rows come from one run on one machine; on a CPU the simulated devices share cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

DEVICE_COUNTS = (1, 8)
QUICK = ["model.num_particles=8", "model.d_model=16", "model.num_heads=2", "audio.embedded_dim=16",
         "audio.embedded_width=16", "audio.embedded_depth=1", "train.seq_len=2", "data.synthetic.size=32",
         "model.num_gaussians=160"]


def measure(config, devices: int, steps: int) -> dict:
    """Compile and time ``steps`` train steps on a ``data=devices`` mesh (runs in this process)."""
    import jax
    import numpy as np

    from avatar_jax.geometry import look_at
    from avatar_jax.model.canonical import synthetic_avatar
    from avatar_jax.train import data, sharding, step
    from avatar_jax.train import logging as train_logging
    from avatar_jax.train import state as state_lib
    from avatar_jax.train.optimizer import make_optimizer

    b, t, size = int(config.train.batch_size), int(config.train.seq_len), int(config.data.synthetic.size)
    avatar = synthetic_avatar(int(config.model.num_gaussians), int(config.model.num_particles), seed=config.seed)
    camera = look_at(np.array([0.0, 0.3, -2.6]), np.array([0.0, 0.3, 0.0]), width=size, height=size, fov_y_deg=40)
    rng = np.random.default_rng(config.seed)
    rest = np.asarray(avatar.means)[rng.integers(0, avatar.num_gaussians, 553)]
    consts = step.make_constants(config, avatar, rest)
    rs = step.RenderSettings(size, size, step.render_capacity(avatar, camera, float(config.train.capacity_factor)),
                             (0.9, 0.9, 0.9), config.render.backend)
    kp = {}
    for name, shape in {"face": (478, 2), "hands": (2, 21, 2), "body": (33, 2)}.items():
        kp[name] = rng.uniform(0, size, (b, t, *shape)).astype(np.float32)
        kp[name + "_conf"] = np.ones((b, t, *shape[:-1]), np.float32)
    batch = data.Batch(audio=(0.1 * rng.standard_normal((b, int(round(t * 16000 / config.audio.fps))))).astype(
        np.float32), frames=rng.integers(0, 256, (b, t, size, size, 3), dtype=np.uint8),
        masks=rng.integers(0, 256, (b, t, size, size), dtype=np.uint8),
        K=np.broadcast_to(np.asarray(camera.K), (b, 3, 3)), viewmat=np.broadcast_to(np.asarray(camera.viewmat),
                                                                                    (b, 4, 4)), **kp)
    mesh = sharding.make_mesh({"data": devices, "fsdp": 1, "model": 1})
    optimizer = make_optimizer(config.train, config.audio)
    graphdef, state = state_lib.create_state(config, mesh, optimizer)
    state_sh = jax.tree.map(lambda x: x.sharding, state)
    const_sh, batch_sh = step.constant_shardings(mesh, consts), data.batch_shardings(mesh, batch)
    fn = step.make_train_step(graphdef, optimizer, rs, config.loss, state_shardings=state_sh,
                              const_shardings=const_sh, batch_shardings=batch_sh, mesh=mesh)
    consts, dev_batch = jax.device_put(consts, const_sh), data.to_device(batch, batch_sh)
    tic = time.perf_counter()
    compiled = fn.lower(state, consts, dev_batch).compile()
    compile_s = time.perf_counter() - tic
    stats = train_logging.compiled_stats(compiled)
    state, metrics = compiled(state, consts, dev_batch)  # warm-up
    jax.block_until_ready(metrics)
    runs = []
    for _ in range(steps):
        tic = time.perf_counter()
        state, metrics = compiled(state, consts, dev_batch)
        jax.block_until_ready(metrics)
        runs.append(time.perf_counter() - tic)
    step_s = float(np.median(runs))
    return dict(devices=devices, batch_size=b, seq_len=t, image_size=size, gaussians=avatar.num_gaussians,
                compile_s=compile_s, step_s=step_s, frames_per_s=b * t / step_s,
                peak_mib_per_device=stats.get("peak_bytes", 0) / 2**20, gflops_per_device=stats["flops"] / 1e9,
                loss=float(metrics["loss"]))


def _child(devices: int, overrides: list[str], steps: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
    env.setdefault("JAX_PLATFORMS", "cpu")
    cmd = [sys.executable, "-m", "avatar_jax.bench.train", str(devices), str(steps), *overrides]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if res.returncode:
        raise RuntimeError(f"bench train on {devices} device(s) failed: {res.stderr.strip().splitlines()[-1:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(config, out_dir) -> dict:
    del out_dir
    quick = bool(config.bench.quick)
    overrides = QUICK if quick else []
    overrides = overrides + [f"seed={config.seed}"]
    steps = 2 if quick else 5
    rows = []
    print(f"{'devices':>7} {'step s':>8} {'frames/s':>9} {'MiB/dev':>8} {'GFLOP/dev':>10} {'compile s':>9}")
    for n in DEVICE_COUNTS:
        r = _child(n, overrides, steps)
        rows.append(r)
        print(f"{n:>7} {r['step_s']:>8.3f} {r['frames_per_s']:>9.1f} {r['peak_mib_per_device']:>8.1f} "
              f"{r['gflops_per_device']:>10.2f} {r['compile_s']:>9.1f}", flush=True)
    base = rows[0]
    for r in rows:
        r["speedup_vs_1"] = base["step_s"] / r["step_s"]
        r["memory_ratio_vs_1"] = r["peak_mib_per_device"] / max(base["peak_mib_per_device"], 1e-9)
    return {"quick": quick, "rows": rows}


if __name__ == "__main__":  # one measurement in a fresh process: DEVICES STEPS [config overrides...]
    from avatar_jax.config import load_config

    cfg = load_config("tiny", sys.argv[3:])
    print(json.dumps(measure(cfg, int(sys.argv[1]), int(sys.argv[2]))))
