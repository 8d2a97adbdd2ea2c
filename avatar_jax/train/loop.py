"""``train(config, workdir)``: the training job, start to end, as one library function.

Sections, in order: mesh and data -> the canonical avatar and step constants -> train state (fresh,
or restored from the workdir's latest checkpoint with the data iterator's position) -> compile the
step and report its per-device memory and FLOPs -> the loop (log, checkpoint, NaN guard,
preemption) -> held-out scores and the summary JSON.

Deterministic given ``config.seed``: the same batches in the same order and the same parameters,
whether the run is uninterrupted or resumed from a checkpoint, on any mesh shape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.audio import pretrained
from avatar_jax.config import validate
from avatar_jax.errors import ConfigError, TrainingError
from avatar_jax.train import avatar as avatar_lib
from avatar_jax.train import data, evaluate, sharding, step, vsd
from avatar_jax.train import logging as train_logging
from avatar_jax.train import state as state_lib
from avatar_jax.train.optimizer import make_optimizer

SUMMARY_FILE = "summary.json"
SCORE_ITEM = "vsd_score"  # the checkpoint item holding the variational VSD's LoRA score (train/checkpoint.py)


def _check(config) -> None:
    t = config.train
    validate(config)
    for key in ("steps", "batch_size", "seq_len", "log_every"):
        if int(t[key]) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {t[key]}")
    if int(t.max_bad_steps) < 1:
        raise ConfigError(f"train.max_bad_steps must be >= 1, got {t.max_bad_steps}")
    if min(int(t.checkpoint_every), int(t.image_every), int(t.eval_clips), int(t.eval_frames)) < 0:
        raise ConfigError("train.checkpoint_every, image_every, eval_clips and eval_frames must be >= 0")
    burn = int(t.get("burn_in_frames", 0))
    if not 0 <= burn < int(t.seq_len):
        raise ConfigError(f"train.burn_in_frames must be in [0, train.seq_len={t.seq_len}), got {burn}")


def train(config, workdir: str, *, data_root: str | None = None, mesh=None, progress: bool = True,
          checkpointer=None) -> dict:
    """Train ``config`` on ``data_root`` (default ``config.data.root``) in ``workdir``; returns the summary.

    Resumes from the workdir's latest checkpoint when there is one. ``mesh`` defaults to
    ``config.mesh`` over all devices. ``checkpointer`` may be passed in (tests); otherwise one is made
    for ``workdir`` (it refuses a workdir of an incompatible config).
    """
    from avatar_jax.train.checkpoint import Checkpointer, PreemptionGuard

    start_time = time.perf_counter()
    _check(config)
    # a pretrained audio encoder's architecture goes into the config (and config.json): resume and export
    # rebuild the model without its upstream folder
    config = pretrained.resolve(config)
    t = config.train
    root = data_root or config.data.root
    if root != config.data.root:  # config.json then names the data this run trained on (eval, export)
        config = config.copy_and_resolve_references()
        with config.unlocked():
            config.data.root = root
    mesh = mesh if mesh is not None else sharding.make_mesh(dict(config.mesh))
    lead = jax.process_index() == 0

    # ---- data and the avatar the clips show
    source = data.make_source(config, root, "train")
    trained = avatar_lib.load_training_avatar(config, root, source.subjects)
    consts = step.make_constants(config, trained.avatar, trained.landmarks, trained.region)
    # Synthetic clips know the teacher's pose at every frame: windows start from it (else from rest).
    start_states = (avatar_lib.teacher_start_states(trained, source.metas, bool(config.model.use_body_skinning))
                    if t.get("start_from_teacher", True) else None)
    iterator = data.make_iterator(config, source)
    optimizer = make_optimizer(t, config.audio)
    # the frozen video teacher of Eq. 9 (loss.vsd > 0): vsd.teacher, sharded FSDP x tensor-parallel
    teacher = vsd.load_teacher(config, mesh) if float(config.loss.vsd) else None
    teacher_args = () if teacher is None else (teacher.params,)
    score = None if teacher is None else teacher.score  # the variational form's LoRA score (checkpointed with the step)

    # ---- state: the workdir's latest checkpoint, or fresh from the seed
    with contextlib.ExitStack() as stack:  # a checkpointer made here is closed here, also on errors
        ckpt = checkpointer or stack.enter_context(Checkpointer(workdir, config))
        graphdef, abstract = state_lib.abstract_state(config, mesh, optimizer)
        latest = ckpt.latest_step()
        history: list[float] = []
        score_note = None
        if latest is not None:
            state, extra = ckpt.restore(latest, abstract)
            iterator.set_state(extra["data"])
            history = list(extra.get("losses", []))
            if score is not None:  # the LoRA score continues where it was (a step without one: VSD switched on)
                if ckpt.has_item(latest, SCORE_ITEM):
                    score = ckpt.restore_item(latest, SCORE_ITEM, jax.tree.map(
                        lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), score,
                        teacher.score_shardings))
                    score_note = f"variational VSD: LoRA score restored from step {latest}"
                else:
                    score_note = f"variational VSD: checkpoint step {latest} has no LoRA score; it starts from zero"
        first = data.next_batch(iterator, root, start_states)  # before any compile: a corrupt dataset fails fast
        if latest is None:
            graphdef, state = state_lib.create_state(config, mesh, optimizer, (graphdef, abstract))
        start = int(state.step)
        rs = step.render_settings(config, trained.avatar, first, source.width, source.height)

        # ---- the compiled step, with its memory and FLOPs printed before it first runs
        state_sh = jax.tree.map(lambda a: a.sharding, abstract)
        const_sh = step.constant_shardings(mesh, consts)
        batch_sh = data.batch_shardings(mesh, first)
        train_step = step.make_train_step(graphdef, optimizer, rs, config.loss, state_shardings=state_sh,
                                          const_shardings=const_sh, batch_shardings=batch_sh, mesh=mesh,
                                          burn_in=int(t.get("burn_in_frames", 0)),
                                          distill=None if teacher is None else teacher.distiller,
                                          teacher_shardings=None if teacher is None else teacher.shardings,
                                          score_shardings=None if teacher is None else teacher.score_shardings)
        consts = jax.device_put(consts, const_sh)
        score_args = () if score is None else (score,)
        compiled = train_step.lower(state, consts, data.to_device(first, batch_sh), *teacher_args,
                                    *score_args).compile()
        stats = train_logging.compiled_stats(compiled)
        frames_per_step = int(t.batch_size) * int(t.seq_len)
        nan_steps = {int(s) for s in t.debug_nan_steps}
        scores: dict[str, dict] = {}

        def held_out(params) -> dict:
            return evaluate.evaluate(graphdef, params, consts, rs, root, clips=int(t.eval_clips),
                                     frames=int(t.eval_frames), landmark_rest=trained.landmarks,
                                     region=trained.region)

        def extra() -> dict:
            return {"data": iterator.get_state(), "losses": history}

        def items() -> dict | None:
            return None if score is None else {SCORE_ITEM: score}

        with train_logging.TrainLogger(workdir, int(t.steps), start, enabled=lead, progress=progress) as log, \
                PreemptionGuard() as preemption:
            log.print(f"mesh {dict(mesh.shape)}, {source}, avatar of {trained.subject!r} with "
                      f"{trained.avatar.num_gaussians} Gaussians / {trained.avatar.num_particles} particles, "
                      f"{source.height}x{source.width} renders ({rs.capacity} slots per frame)")
            if teacher is not None:
                log.print(f"video score distillation from the {teacher.description}")
            if score_note:
                log.print(score_note)
            log.print(f"compiled step per device: {stats.get('peak_bytes', 0) / 2**20:.1f} MiB "
                      f"(temp {stats.get('temp_size_in_bytes', 0) / 2**20:.1f} MiB), {stats['flops'] / 1e9:.2f} GFLOP")
            if start == 0 and t.eval_clips:
                scores["before"] = held_out(state.params)
                log.eval_scalars(0, scores["before"])
            # ---- the loop
            batch, i, stopped = first, start, None
            window_time, window_start = 0.0, start
            while i < int(t.steps):
                if preemption.requested:
                    stopped = "preempted"
                    break
                if batch is None:
                    batch = data.next_batch(iterator, root, start_states)
                if i in nan_steps:  # a poisoned sample: the guard must skip this step
                    batch = dataclasses.replace(batch, audio=np.full_like(batch.audio, np.nan))
                tic = time.perf_counter()
                if score is None:
                    state, metrics = compiled(state, consts, data.to_device(batch, batch_sh), *teacher_args)
                else:
                    state, score, metrics = compiled(state, consts, data.to_device(batch, batch_sh), *teacher_args,
                                                     score)
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                window_time += time.perf_counter() - tic
                seen, batch, i = batch, None, i + 1
                history.append(metrics["loss"])
                if metrics["bad_streak"] >= int(t.max_bad_steps):
                    ckpt.wait()
                    raise TrainingError(f"stopped at step {i}: {int(metrics['bad_streak'])} non-finite steps in a row "
                                        f"(train.max_bad_steps={t.max_bad_steps}); latest good checkpoint: step "
                                        f"{ckpt.latest_step()}")
                log.advance(i, metrics["loss"])
                if i % int(t.log_every) == 0 or i == int(t.steps):
                    n = i - window_start
                    log.scalars(i, metrics, window_time / n, n * frames_per_step / max(window_time, 1e-9))
                    window_time, window_start = 0.0, i
                if t.image_every and i % int(t.image_every) == 0:  # every process renders (sharded params)
                    log.image(i, _preview(graphdef, state.params, consts, rs, seen))
                if t.checkpoint_every and i % int(t.checkpoint_every) == 0:
                    ckpt.save(i, state, extra(), items=items())
            ckpt.save(i, state, extra(), force=True, items=items())
            ckpt.wait()
            if stopped is None and t.eval_clips:
                scores["after"] = held_out(state.params)
                log.eval_scalars(i, scores["after"])

    summary = dict(
        step=i, steps=int(t.steps), stopped=stopped or "done", losses=history,
        first_loss=history[0] if history else None,
        final_loss=float(np.nanmean(history[-5:])) if np.isfinite(history[-5:]).any() else None,  # skips NaN steps
        bad_steps=int(state.bad_total), mesh=dict(mesh.shape), devices=jax.device_count(),
        frames_per_step=frames_per_step, compiled=stats, held_out=scores, seconds=time.perf_counter() - start_time,
    )
    if lead:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=1)
    return summary


def _preview(graphdef, params, consts, rs, batch: data.Batch) -> np.ndarray:
    """Renders of the first sample of ``batch`` over its clip frames (for TensorBoard)."""
    init = None if batch.init is None else jnp.asarray(batch.init[0])
    start = 0 if batch.start is None else jnp.asarray(batch.start[0])
    _, rgb, _, _ = step.predict_jit(
        graphdef, params, consts, jnp.asarray(batch.audio[0]), jnp.asarray(batch.K[0]), jnp.asarray(batch.viewmat[0]),
        batch.num_frames, rs, init, start)
    return train_logging.frame_grid(evaluate.to_host(rgb), np.asarray(batch.frames[0]) / 255.0)
