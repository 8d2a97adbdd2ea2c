"""The optimiser, from ``config.train``: AdamW on a warmup + cosine schedule, global-norm clipping,
optional gradient accumulation (``optax.MultiSteps``: one update every ``grad_accum`` batches).

With a pretrained audio encoder (``config.audio``, :mod:`avatar_jax.audio.pretrained`) its parameters form a
group of their own: frozen (``audio.encoder_lr_scale`` 0: no update, no optimiser state, no weight decay) or
fine-tuned on the same schedule scaled by ``encoder_lr_scale``."""

from __future__ import annotations

import jax
import optax

from avatar_jax.errors import ConfigError

ENCODER_PATH = ("driving", "encoder")  # where the model (model/talking.py) keeps its audio encoder


def learning_rate_schedule(train_config) -> optax.Schedule:
    """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps`` updates, then cosine decay to
    ``learning_rate * end_lr_ratio`` at the last update."""
    t = train_config
    updates = max(1, int(t.steps) // max(1, int(t.grad_accum)))
    warmup = min(int(t.warmup_steps), updates - 1)
    return optax.warmup_cosine_decay_schedule(0.0, float(t.learning_rate), max(warmup, 0), max(updates, warmup + 1),
                                              end_value=float(t.learning_rate) * float(t.end_lr_ratio))


def encoder_labels(params):
    """``"encoder"`` for every leaf under :data:`ENCODER_PATH`, ``"avatar"`` for the rest (same tree)."""

    def label(path, _):
        keys = tuple(getattr(k, "key", None) for k in path[:len(ENCODER_PATH)])
        return "encoder" if keys == ENCODER_PATH else "avatar"

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(train_config, audio_config=None) -> optax.GradientTransformation:
    """``audio_config``: the run's ``config.audio``; a pretrained encoder there gets its own group (module doc)."""
    t = train_config
    for key in ("learning_rate", "steps", "grad_accum"):
        if t[key] <= 0:
            raise ConfigError(f"train.{key} must be positive, got {t[key]}")
    if t.grad_clip < 0 or t.weight_decay < 0 or t.warmup_steps < 0:
        raise ConfigError("train.grad_clip, train.weight_decay and train.warmup_steps must be >= 0")
    if not 0.0 <= t.end_lr_ratio <= 1.0:
        raise ConfigError(f"train.end_lr_ratio must be in [0, 1], got {t.end_lr_ratio}")
    parts = [optax.clip_by_global_norm(float(t.grad_clip))] if t.grad_clip > 0 else []
    schedule = learning_rate_schedule(t)

    def adamw(lr):
        return optax.adamw(lr, b1=float(t.adam_b1), b2=float(t.adam_b2), weight_decay=float(t.weight_decay))

    from avatar_jax.audio import pretrained

    if audio_config is not None and pretrained.is_pretrained(audio_config):
        pretrained.check(audio_config)
        scale = float(audio_config.get("encoder_lr_scale", 0.0))
        encoder = optax.set_to_zero() if scale == 0 else adamw(lambda n: scale * schedule(n))
        parts.append(optax.multi_transform({"avatar": adamw(schedule), "encoder": encoder}, encoder_labels))
    else:
        parts.append(adamw(schedule))
    opt = optax.chain(*parts)
    if int(t.grad_accum) > 1:
        opt = optax.MultiSteps(opt, every_k_schedule=int(t.grad_accum)).gradient_transformation()
    return opt
