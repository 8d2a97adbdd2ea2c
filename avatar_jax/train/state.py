"""The train state: parameters, optimiser state and the counters the NaN guard keeps, with shardings.

Parameters carry logical axis names (NNX ``out_sharding`` metadata) mapped to the mesh by the one
rules table (:mod:`avatar_jax.train.sharding`); the optimiser's moment trees follow their
parameters, its counters are replicated. ``abstract_state`` gives the same tree as
``jax.ShapeDtypeStruct`` with shardings, which is what a checkpoint restores onto (any mesh).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from avatar_jax.model.talking import TalkingAvatar
from avatar_jax.train import sharding


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """``step ()`` batches consumed; ``bad_streak ()`` non-finite steps in a row; ``bad_total ()`` all of them."""

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    bad_streak: jax.Array
    bad_total: jax.Array


def _model(config) -> TalkingAvatar:
    from avatar_jax.audio import pretrained
    from avatar_jax.model import pose_driven

    # a pretrained speech encoder (wav2vec2/HuBERT) is built from its spec; its weights come in initial_model
    encoder = pretrained.build(config.audio, nnx.Rngs(config.seed))
    if pose_driven.model_kind(config.model) == "pose_driven":  # the audio -> pose -> LBS baseline
        return pose_driven.PoseDrivenTalkingAvatar(config, nnx.Rngs(config.seed), encoder=encoder)
    return TalkingAvatar(config, nnx.Rngs(config.seed), encoder=encoder)


def pretrained_weights(config) -> nnx.State | None:
    """The upstream weights of a configured pretrained audio encoder (``audio.checkpoint_dir``), else None."""
    from avatar_jax.audio import pretrained

    return pretrained.load_weights(config.audio) if pretrained.is_pretrained(config.audio) else None


def initial_model(config, weights: nnx.State | None = None) -> TalkingAvatar:
    """The model as training starts it: parameters from ``config.seed``, a pretrained audio encoder's from
    ``weights`` (:func:`pretrained_weights`; read here when None)."""
    model = _model(config)
    if weights is None:
        weights = pretrained_weights(config)
    if weights is not None:
        nnx.update(model.driving.encoder.model, weights)
    return model


def abstract_model(config) -> tuple[nnx.GraphDef, nnx.State]:
    """``(graphdef, abstract params)`` without allocating any parameter."""
    return nnx.split(nnx.eval_shape(lambda: _model(config)), nnx.Param)


def state_shardings(mesh, abstract: TrainState, optimizer: optax.GradientTransformation) -> TrainState:
    """NamedShardings for every leaf of ``abstract`` (a TrainState of arrays or ShapeDtypeStructs)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    params = sharding.state_shardings(mesh, abstract.params)
    # a grouped optimiser (a frozen pretrained encoder, train/optimizer.py) holds empty MaskedNodes for the
    # parameters outside a group: they stay as they are (no array, no sharding)
    def keep_masked(p, s):
        return p if isinstance(p.get_value() if isinstance(p, nnx.Variable) else p, optax.MaskedNode) else s

    opt = optax.tree_map_params(optimizer, keep_masked, abstract.opt_state, params,
                                transform_non_params=lambda _: replicated,
                                is_leaf=lambda x: isinstance(x, nnx.Variable))
    return TrainState(step=replicated, params=params, opt_state=opt, bad_streak=replicated, bad_total=replicated)


def abstract_state(config, mesh, optimizer) -> tuple[nnx.GraphDef, TrainState]:
    """``(graphdef, TrainState of ShapeDtypeStruct with .sharding)``: the target of a checkpoint restore."""
    graphdef, params = abstract_model(config)
    scalar = jax.ShapeDtypeStruct((), jnp.int32)
    shapes = TrainState(step=scalar, params=params, opt_state=jax.eval_shape(optimizer.init, params),
                        bad_streak=scalar, bad_total=scalar)
    sh = state_shardings(mesh, shapes, optimizer)
    return graphdef, jax.tree.map(lambda s, h: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=h), shapes, sh)


def create_state(config, mesh, optimizer, abstract: tuple[nnx.GraphDef, TrainState] | None = None
                 ) -> tuple[nnx.GraphDef, TrainState]:
    """Fresh parameters from ``config.seed`` (initialised straight into their shards; a pretrained audio
    encoder's from its upstream checkpoint) and optimiser state.

    ``abstract``: :func:`abstract_state`'s result when the caller has it already.
    """
    graphdef, abstract = abstract or abstract_state(config, mesh, optimizer)
    sh = jax.tree.map(lambda a: a.sharding, abstract)

    def init(weights):
        params = nnx.split(initial_model(config, weights), nnx.Param)[1]
        zero = jnp.zeros((), jnp.int32)
        return TrainState(step=zero, params=params, opt_state=optimizer.init(params), bad_streak=zero, bad_total=zero)

    return graphdef, jax.jit(init, out_shardings=sh)(pretrained_weights(config))
