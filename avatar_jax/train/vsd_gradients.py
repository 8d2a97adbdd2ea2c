"""How large, and how consistent, is the VSD gradient on the student next to the other losses' gradient?

    params (a run's checkpoint, or the seed's initialisation) + training windows + the teacher
      g_rest = d(keypoints + arap + temporal, weighted as configured)/d params      (what training without VSD follows)
      g_vsd[i] = d(L_vsd surrogate, weight 1)/d params at teacher draw i (tau, eps)  (Eq. 9, one Monte Carlo sample)

Reported per batch and averaged: ``|g_rest|``, ``|g_vsd|`` (mean over draws), the cosine between two draws (how much
of one draw is signal: the expected cosine of two independent draws is ``|E g|^2 / E|g|^2``), the cosine of a draw
and of the mean of the draws with ``g_rest``, and the VSD weight that makes ``|w g_vsd| = |g_rest|``. With
``train.grad_clip`` the update is the clipped sum, so the weight sets the mix of the two directions.

``python -m avatar_jax.train.vsd_gradients --workdir RUN [--init] --teacher T --batches 2 --draws 4
[--config.vsd.KEY=VALUE ...]`` (vsd overrides change the teacher's settings: audio_scale, tau range, variational).
"""

from __future__ import annotations

import json
import os

import numpy as np


def _norm(tree) -> float:
    import optax

    return float(optax.tree.norm(tree))


def _dot(a, b) -> float:
    import jax
    import jax.numpy as jnp

    return float(sum(jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32))
                     for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)))


def cosine(a, b) -> float:
    """Cosine of two gradient pytrees (0 when either is zero)."""
    na, nb = _norm(a), _norm(b)
    return 0.0 if na == 0 or nb == 0 else _dot(a, b) / (na * nb)


def gradient_report(workdir: str, teacher: str, *, data_root: str | None = None, init: bool = False,
                    batches: int = 2, draws: int = 4, overrides: tuple[str, ...] = ()) -> dict:
    """Gradients of the run in ``workdir`` (its newest checkpoint; ``init``: the seed's initialisation instead) on
    ``batches`` training batches, ``draws`` teacher draws each (see the module docstring)."""
    import jax
    import ml_collections
    from flax import nnx

    from avatar_jax.config import apply_overrides
    from avatar_jax.errors import InputError
    from avatar_jax.train import avatar as avatar_lib
    from avatar_jax.train import data, sharding, step, vsd
    from avatar_jax.train import state as state_lib
    from avatar_jax.train.restore import restore_run

    if batches < 1 or draws < 2:
        raise InputError(f"need batches >= 1 and draws >= 2, got {batches}, {draws}")
    run = restore_run(workdir, data_root=data_root)
    root = run.root
    config = ml_collections.ConfigDict(run.config.to_dict())
    apply_overrides(config, [f"vsd.teacher={teacher}", *overrides])
    source, trained = run.source, run.trained
    params = nnx.split(state_lib.initial_model(config), nnx.Param)[1] if init else run.params
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, model=1), jax.devices()[:1])
    consts = step.make_constants(config, trained.avatar, trained.landmarks, trained.region)
    starts = avatar_lib.teacher_start_states(trained, source.metas, bool(config.model.use_body_skinning))
    iterator = data.make_iterator(config, source)
    first = data.next_batch(iterator, root, starts)
    rs = step.render_settings(config, trained.avatar, first, source.width, source.height)
    with config.unlocked():
        config.loss.vsd = 1.0
    loaded = vsd.load_teacher(config, mesh)
    rest_loss = ml_collections.ConfigDict(config.loss.to_dict())
    rest_loss.vsd = 0.0
    vsd_loss = ml_collections.ConfigDict(config.loss.to_dict())
    for k in ("image", "perceptual", "keypoints", "arap", "temporal"):
        vsd_loss[k] = 0.0
    variational = loaded.distiller.variational
    score, score_note = loaded.score, "initial (LoRA zero)" if variational else None
    if variational and not init:  # the LoRA score as the run left it, when the run trained one
        from avatar_jax.train.checkpoint import Checkpointer
        from avatar_jax.train.loop import SCORE_ITEM

        ckpt = Checkpointer(workdir, run.config, async_save=False)
        if ckpt.has_item(run.step, SCORE_ITEM):
            score = ckpt.restore_item(run.step, SCORE_ITEM, jax.tree.map(
                lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), loaded.score,
                loaded.score_shardings))
            score_note = f"restored from step {run.step}"
        ckpt.close()

    @jax.jit
    def rest_grad(p, batch):
        return jax.grad(lambda q: step.loss_terms(run.graphdef, q, consts, batch, rs, rest_loss)[0])(p)

    @jax.jit
    def vsd_grad(p, batch, teacher_params, score, draw):
        hook = loaded.distiller.hook(teacher_params, batch.audio, draw, score)
        return jax.grad(lambda q: step.loss_terms(run.graphdef, q, consts, batch, rs, vsd_loss, hook,
                                                  return_renders=variational)[0])(p)

    rows = []
    batch = first
    for b in range(batches):
        if b:
            batch = data.next_batch(iterator, root, starts)
        g_rest = rest_grad(params, batch)
        gs = [vsd_grad(params, batch, loaded.params, score, jax.numpy.asarray(1000 * b + i, jax.numpy.int32))
              for i in range(draws)]
        mean = jax.tree.map(lambda *x: sum(x) / len(x), *gs)
        pair = [cosine(gs[i], gs[j]) for i in range(draws) for j in range(i + 1, draws)]
        n_rest, n_vsd = _norm(g_rest), float(np.mean([_norm(g) for g in gs]))
        rows.append({"rest_norm": n_rest, "vsd_norm": n_vsd, "vsd_mean_norm": _norm(mean),
                     "cos_draws": float(np.mean(pair)), "cos_vsd_rest": float(np.mean([cosine(g, g_rest) for g in gs])),
                     "cos_mean_vsd_rest": cosine(mean, g_rest), "balance_weight": n_rest / max(n_vsd, 1e-12)})
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return {"workdir": os.path.abspath(workdir), "step": 0 if init else run.step, "init": init,
            "vsd": {k: config.vsd[k] for k in ("audio_scale", "text_scale", "tau_min", "tau_max", "weighting",
                                               "variational")},
            "score": score_note, "batches": rows, "mean": summary}


def main(argv=None) -> int:
    import argparse
    import sys

    from avatar_jax.errors import AvatarJaxError

    p = argparse.ArgumentParser(description="VSD gradient vs the other losses' gradient on a run's student")
    p.add_argument("--workdir", help="a student run (its config, checkpoint and data)")
    p.add_argument("--teacher", required=True, help="a trained tiny-teacher workdir")
    p.add_argument("--data", default=None, help="the run's dataset (default: its config's data.root)")
    p.add_argument("--init", action="store_true", help="the seed's initial parameters instead of the checkpoint")
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--direction", action="store_true", help="instead: the sign check of denoising_direction on "
                                                            "--data (the teacher's own training clips)")
    args, rest = p.parse_known_args(argv)
    bad = [a for a in rest if not a.startswith("--config.") or "=" not in a]
    if bad:
        p.error(f"unexpected arguments {bad}; overrides are --config.KEY=VALUE")
    try:
        if args.direction:
            print(json.dumps(denoising_direction(args.teacher, args.data or "", draws=args.draws), indent=1))
            return 0
        if not args.workdir:
            p.error("--workdir is needed (a student run), unless --direction")
        res = gradient_report(args.workdir, args.teacher, data_root=args.data, init=args.init, batches=args.batches,
                              draws=args.draws, overrides=tuple(a[len("--config."):] for a in rest))
    except AvatarJaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1))
    return 0



def denoising_direction(teacher_dir: str, data_root: str, *, windows: int = 4, draws: int = 8, noise: float = 0.05,
                        audio_scale: float = 1.0, frames: int = 9) -> dict:
    """Sign check of Eq. 9 with the real teacher: training windows ``x`` (the teacher's own data) plus pixel noise
    ``d`` (std ``noise``); the mean plain-VSD frame gradient ``g`` over ``draws`` teacher draws at ``x + d``.
    Descent (``-g``) must remove the noise, i.e. ``cos(g, d) > 0``; also reported: ``cos(g, d)`` per window and
    the gradient at the clean windows (its norm relative to the noisy one's)."""
    import jax
    import jax.numpy as jnp

    from avatar_jax.data import index, records
    from avatar_jax.teacher.tiny_training import load_tiny_teacher
    from avatar_jax.train import vsd

    tconfig, teacher, vae, null_text = load_tiny_teacher(teacher_dir)
    settings = vsd.VSDSettings(audio_scale=audio_scale, n_mels=int(tconfig.teacher.n_mels),
                               fps=float(tconfig.data.fps))
    distiller, params = vsd.split_teacher(teacher, vae, null_text, null_text, settings)
    clips, audio = [], []
    for e in index.clips_in_split(index.load_index(data_root), "train")[:windows]:
        r = records.ClipReader(data_root, e["clip_id"])
        w = r.window(0, frames)
        r.close()
        clips.append(w["frame"].astype(np.float32) / 255.0)
        audio.append(w["audio"].astype(np.float32))
    x, a = jnp.asarray(np.stack(clips)), jnp.asarray(np.stack(audio))
    d = noise * jax.random.normal(jax.random.key(0), x.shape)

    @jax.jit
    def mean_grad(p, frames):
        return sum(distiller.hook(p, a, jnp.int32(i))(frames) for i in range(draws)) / draws

    g_noisy, g_clean = mean_grad(params, x + d), mean_grad(params, x)
    per = [float(jnp.vdot(g_noisy[i], d[i]) / (jnp.linalg.norm(g_noisy[i]) * jnp.linalg.norm(d[i])))
           for i in range(x.shape[0])]
    return {"windows": int(x.shape[0]), "draws": draws, "noise": noise, "audio_scale": audio_scale,
            "cos_g_noise": per, "cos_g_noise_mean": float(np.mean(per)),
            "clean_over_noisy_norm": float(jnp.linalg.norm(g_clean) / jnp.linalg.norm(g_noisy))}


if __name__ == "__main__":
    raise SystemExit(main())
