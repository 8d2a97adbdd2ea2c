"""Deformer + skinning + Gaussian head time per frame, for 20k and 100k Gaussians."""

from __future__ import annotations

import jax
from flax import nnx

from avatar_jax.bench.timing import time_fn
from avatar_jax.model.avatar import AudioDrivenAvatar, forward
from avatar_jax.model.canonical import synthetic_avatar


def run(config, out_dir) -> dict:
    del out_dir
    c = config.model
    model = AudioDrivenAvatar(c, nnx.Rngs(config.seed))
    graphdef, state = nnx.split(model)
    # Nudge every parameter so the timed path is a "trained" one (zero-initialised outputs included).
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(config.seed), len(leaves))
    state = jax.tree.unflatten(treedef, [x + 0.05 * jax.random.normal(k, x.shape, x.dtype)
                                         for x, k in zip(leaves, keys, strict=True)])
    quick = bool(config.bench.quick)
    frames = 4 if quick else config.train.seq_len
    step = jax.jit(lambda s, av, d: forward(graphdef, s, av, d)[0])
    rows = []
    print(f"model d={c.d_model} particles={c.num_particles} heads={c.num_heads} window={c.window} frames={frames}")
    print(f"{'gaussians':>10} {'ms/frame':>10} {'frames/s':>10}")
    for n in (2_000,) if quick else (20_000, 100_000):
        avatar = synthetic_avatar(n, c.num_particles, k=c.bind_k, seed=config.seed)
        driving = jax.random.normal(jax.random.key(1), (frames, c.d_model))
        t = time_fn(step, state, avatar, driving, repeats=3)
        per_frame = t["median"] / frames
        print(f"{n:>10} {per_frame * 1e3:>10.2f} {1 / per_frame:>10.1f}")
        rows.append(dict(gaussians=n, frames=frames, seconds=t["median"], seconds_per_frame=per_frame))
    return {"rows": rows, "d_model": c.d_model, "num_particles": c.num_particles}
