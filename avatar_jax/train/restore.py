"""Open a training workdir for use outside training: its config, newest checkpoint and trained avatar.

    WORKDIR/config.json + checkpoints/ ──► RestoredRun(config, step, graphdef, params, source, trained)

Evaluation and export both start here, so "which checkpoint, which avatar, which clips" has one
answer. Restores on a one-device mesh (the checkpoint may come from any mesh shape).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections
from flax import nnx

from avatar_jax.data import loader
from avatar_jax.errors import InputError
from avatar_jax.train import avatar as avatar_lib
from avatar_jax.train import data, sharding
from avatar_jax.train import state as state_lib
from avatar_jax.train.checkpoint import CONFIG_FILE, Checkpointer
from avatar_jax.train.optimizer import make_optimizer


@dataclasses.dataclass(frozen=True)
class RestoredRun:
    config: ml_collections.ConfigDict
    step: int  # the restored checkpoint's step
    graphdef: nnx.GraphDef
    params: nnx.State  # host copy of the model parameters
    root: str  # dataset folder the run trained on
    source: loader.WindowSource  # the dataset's training windows (clip camera, size)
    trained: avatar_lib.TrainingAvatar  # the canonical avatar the run deformed (+ landmarks)


def restore_run(workdir: str, *, data_root: str | None = None) -> RestoredRun:
    """Restore ``workdir``'s newest complete checkpoint; ``data_root`` overrides the config's ``data.root``."""
    cfg_path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isdir(workdir) or not os.path.exists(cfg_path):
        raise InputError(f"{workdir!r} is not a training workdir (no {CONFIG_FILE})")
    with open(cfg_path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    ckpt = Checkpointer(workdir, config, async_save=False)
    step = ckpt.latest_step()
    if step is None:
        raise InputError(f"workdir {workdir!r} has no complete checkpoint yet; train first")
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, model=1), jax.devices()[:1])
    graphdef, abstract = state_lib.abstract_state(config, mesh, make_optimizer(config.train, config.audio))
    state, _ = ckpt.restore(step, abstract)
    ckpt.close()
    root = data_root or config.data.root
    source = data.make_source(config, root, "train")
    trained = avatar_lib.load_training_avatar(config, root, source.subjects)
    return RestoredRun(config, int(step), graphdef, jax.device_get(state.params), root, source, trained)
