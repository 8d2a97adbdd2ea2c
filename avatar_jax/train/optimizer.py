"""The optimiser, from ``config.train``: AdamW on a warmup + cosine schedule, global-norm clipping,
optional gradient accumulation (``optax.MultiSteps``: one update every ``grad_accum`` batches)."""

from __future__ import annotations

import optax

from avatar_jax.errors import ConfigError


def learning_rate_schedule(train_config) -> optax.Schedule:
    """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps`` updates, then cosine decay to
    ``learning_rate * end_lr_ratio`` at the last update."""
    t = train_config
    updates = max(1, int(t.steps) // max(1, int(t.grad_accum)))
    warmup = min(int(t.warmup_steps), updates - 1)
    return optax.warmup_cosine_decay_schedule(0.0, float(t.learning_rate), max(warmup, 0), max(updates, warmup + 1),
                                              end_value=float(t.learning_rate) * float(t.end_lr_ratio))


def make_optimizer(train_config) -> optax.GradientTransformation:
    t = train_config
    for key in ("learning_rate", "steps", "grad_accum"):
        if t[key] <= 0:
            raise ConfigError(f"train.{key} must be positive, got {t[key]}")
    if t.grad_clip < 0 or t.weight_decay < 0 or t.warmup_steps < 0:
        raise ConfigError("train.grad_clip, train.weight_decay and train.warmup_steps must be >= 0")
    if not 0.0 <= t.end_lr_ratio <= 1.0:
        raise ConfigError(f"train.end_lr_ratio must be in [0, 1], got {t.end_lr_ratio}")
    parts = [optax.clip_by_global_norm(float(t.grad_clip))] if t.grad_clip > 0 else []
    parts.append(optax.adamw(learning_rate_schedule(t), b1=float(t.adam_b1), b2=float(t.adam_b2),
                             weight_decay=float(t.weight_decay)))
    opt = optax.chain(*parts)
    if int(t.grad_accum) > 1:
        opt = optax.MultiSteps(opt, every_k_schedule=int(t.grad_accum)).gradient_transformation()
    return opt
