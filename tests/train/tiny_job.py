"""A tiny, real sharded training job for the checkpoint / resume / multi-host tests.

``python -m tests.train.tiny_job --workdir W --data D --steps N [...]``: a two-layer regression of each
window's audio energy from its frame colours, trained with optax Adam through a jitted step over the
``("data","fsdp","model")`` mesh, fed by the project's grain loader (each process reads its shard),
checkpointed by :class:`avatar_jax.train.checkpoint.Checkpointer`, stopped by
:class:`~avatar_jax.train.checkpoint.PreemptionGuard`. It joins a multi-process job from the
environment (:func:`avatar_jax.train.distributed.initialize_from_env`).

Every completed step appends ``{"step", "loss", "keys", "process"}`` to ``WORKDIR/log.<process>.jsonl``
(``keys``: this process's ``(clip, start)`` windows of the batch). ``--hold-at K`` parks every
process after step K (a marker file ``WORKDIR/hold.<process>`` says so) until a stop signal
arrives, so a test can kill or signal it at a known point.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def make_dataset(root: str, clips: int = 4, frames: int = 12) -> str:
    """Tiny fake clips (8x10 px) of two subjects, all in the train split."""
    from avatar_jax.data import index

    from ..data.fake import fake_clip

    for c in range(clips):
        fake_clip(root, f"c{c}", f"s{c % 2}", frames + c, seed=c)
    index.build_index(root, held_out=0.0)
    return root


def config(**train):
    from avatar_jax.config import load_config

    c = load_config("tiny")
    with c.unlocked():
        for k, v in {**dict(batch_size=8, seq_len=2, checkpoint_every=3, learning_rate=0.02), **train}.items():
            c.train[k] = v
    return c


def init_params(hidden: int = 8):
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.key(0))
    return {"w1": 0.5 * jax.random.normal(k1, (3, hidden)), "b1": jnp.zeros((hidden,)),
            "w2": 0.5 * jax.random.normal(k2, (hidden, 1))}


# logical sharding of each parameter (hidden units over "model"; w1's input dim over "fsdp")
PARAM_AXES = {"w1": (None, "mlp"), "b1": ("mlp",), "w2": ("mlp", None)}


def features(batch):
    """``x (B,L,3)`` mean frame colour in [0,1], ``y (B,L)`` audio energy per frame (x1e3)."""
    import jax.numpy as jnp

    x = batch["frame"].astype(jnp.float32).mean(axis=(2, 3)) / 255.0
    b, length = x.shape[:2]
    y = (batch["audio"].reshape(b, length, -1) ** 2).mean(-1) * 1e3
    return x, y


def apply(params, x):
    import jax.numpy as jnp

    return (jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"])[..., 0]


def loss_fn(params, batch):
    import jax.numpy as jnp

    x, y = features(batch)
    return jnp.mean((apply(params, x) - y) ** 2)


def optimizer(lr):
    import optax

    return optax.adam(lr)


def state_shardings(mesh, state):
    """NamedShardings for ``{"step","params","opt_state"}``: params and Adam moments by PARAM_AXES."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from avatar_jax.train.sharding import named_sharding

    def by_path(path, leaf):
        name = next((getattr(k, "key", None) for k in reversed(path) if getattr(k, "key", None) in PARAM_AXES),
                    None)
        if name is not None and getattr(leaf, "ndim", 0) == len(PARAM_AXES[name]):
            return named_sharding(mesh, PARAM_AXES[name])
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map_with_path(by_path, state)


def abstract_state(mesh, lr):
    """``jax.ShapeDtypeStruct`` pytree (with shardings) of the train state on ``mesh``."""
    import jax

    shapes = jax.eval_shape(lambda: new_state(lr))
    shard = state_shardings(mesh, shapes)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shard)


def new_state(lr):
    import jax.numpy as jnp

    params = init_params()
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer(lr).init(params)}


def make_step(mesh, lr, state_sharding, batch_sharding):
    import jax
    import optax

    def step(state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
        updates, opt_state = optimizer(lr).update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, loss

    return jax.jit(step, in_shardings=(state_sharding, batch_sharding), out_shardings=(state_sharding, None),
                   donate_argnums=0)


def global_batch(local, sharding):
    """Each process's rows of the batch -> one global array per field, split over (data, fsdp)."""
    import jax
    import numpy as np

    keep = ("frame", "audio")
    return {k: jax.make_array_from_process_local_data(sharding[k], np.asarray(local[k])) for k in keep}


def run(workdir: str, data: str, steps: int, *, mesh_shape: dict | None = None, hold_at: int | None = None,
        train: dict | None = None) -> dict:
    """Train to ``steps`` (resuming from ``workdir``'s latest checkpoint); returns a summary dict."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from avatar_jax.data.loader import make_loader
    from avatar_jax.train.checkpoint import Checkpointer, PreemptionGuard
    from avatar_jax.train.sharding import make_mesh, named_sharding

    cfg = config(steps=steps, **(train or {}))
    lr, pid = float(cfg.train.learning_rate), jax.process_index()
    mesh = make_mesh(mesh_shape or {"data": -1, "fsdp": 1, "model": 1})
    abstract = abstract_state(mesh, lr)
    shard = jax.tree.map(lambda a: a.sharding, abstract)
    batch_sharding = {"frame": named_sharding(mesh, ("batch", None, None, None, None)),
                      "audio": named_sharding(mesh, ("batch", None))}
    step_fn = make_step(mesh, lr, shard, batch_sharding)
    local_batch = cfg.train.batch_size // jax.process_count()
    _, dataset = make_loader(data, seq_len=cfg.train.seq_len, batch_size=local_batch, seed=cfg.seed, num_threads=1)
    it = iter(dataset)
    os.makedirs(workdir, exist_ok=True)
    log = open(os.path.join(workdir, f"log.{pid}.jsonl"), "a")
    summary = {"resumed_from": None, "stopped_at": None, "process_count": jax.process_count()}
    with Checkpointer(workdir, cfg) as ckpt, PreemptionGuard() as guard:
        start = ckpt.latest_step()
        if start is None:
            state, start = jax.device_put(new_state(lr), shard), 0
        else:
            state, extra = ckpt.restore(start, abstract)
            it.set_state(extra["data"])
            summary["resumed_from"] = start
        for step in range(start, steps):
            if guard.requested:
                ckpt.save(step, state, {"data": it.get_state()}, force=True)
                summary["stopped_at"] = step
                break
            local = next(it)
            state, loss = step_fn(state, global_batch(local, batch_sharding))
            keys = [[int(c), int(s)] for c, s in zip(local["clip"], local["start"], strict=True)]
            log.write(json.dumps({"step": step + 1, "loss": float(loss), "keys": keys, "process": pid}) + "\n")
            log.flush()
            ckpt.save(step + 1, state, {"data": it.get_state()})
            if hold_at == step + 1:
                ckpt.wait()
                open(os.path.join(workdir, f"hold.{pid}"), "w").close()
                while not guard.requested:
                    time.sleep(0.05)
        else:
            ckpt.save(steps, state, {"data": it.get_state()}, force=True)
        ckpt.wait()
    summary["params"] = {k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
                         for k, v in state["params"].items()}
    summary["step"] = int(np.asarray(jax.device_get(state["step"].addressable_shards[0].data)))
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--hold-at", type=int, default=None)
    p.add_argument("--mesh", default="data=-1", help="e.g. data=2,model=4")
    p.add_argument("--train", default="{}", help="JSON dict of train.* overrides")
    p.add_argument("--out", default=None, help="write final params (.npz) here")
    a = p.parse_args(argv)

    from avatar_jax.train.distributed import initialize_from_env, shutdown

    initialize_from_env()
    import jax
    import numpy as np

    mesh = {k: int(v) for k, v in (kv.split("=") for kv in a.mesh.split(","))}
    summary = run(a.workdir, a.data, a.steps, mesh_shape=mesh, hold_at=a.hold_at, train=json.loads(a.train))
    params = summary.pop("params")  # gathered: every process holds all of them
    if a.out and jax.process_index() == 0:
        np.savez(a.out, **params)
    print("SUMMARY " + json.dumps(summary), flush=True)
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
