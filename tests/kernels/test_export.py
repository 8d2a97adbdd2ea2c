"""Both Pallas kernels lower for TPU (Mosaic) and CUDA (Triton) with jax.export on this CPU-only machine,
survive a serialize / deserialize round trip, and (Mosaic) carry their cost estimate for XLA."""

import re

import jax
import jax.numpy as jnp
import pytest
from avatar_jax.kernels import splat_backward, splat_forward
from jax import export
from jax.sharding import AbstractDevice, AbstractMesh

KC, CHUNK, TILES = 12, 64, 4
CALL_TARGET = {"tpu": "tpu_custom_call", "gpu": "__gpu$xla.gpu.triton"}


def _forward(platform):
    def f(fk, chunk_tile, chunk_k):
        return splat_forward.forward_raw(fk, chunk_tile, chunk_k, tiles_x=2, tiles_per_camera=4, num_tiles=TILES,
                                         platform=platform, interpret=False)

    args = (jax.ShapeDtypeStruct((KC, 16, CHUNK), jnp.float32), jax.ShapeDtypeStruct((KC,), jnp.int32),
            jax.ShapeDtypeStruct((KC,), jnp.int32))
    return f, args


def _backward(platform):
    def f(fk, pix_in, chunk_tile, chunk_k, chunk_last, n_chunks):
        return splat_backward.backward_raw(fk, pix_in, chunk_tile, chunk_k, chunk_last, n_chunks, tiles_x=2,
                                           tiles_per_camera=4, platform=platform, interpret=False)

    args = (jax.ShapeDtypeStruct((KC, 16, CHUNK), jnp.float32), jax.ShapeDtypeStruct((TILES, 8, 256), jnp.float32),
            jax.ShapeDtypeStruct((KC,), jnp.int32), jax.ShapeDtypeStruct((KC,), jnp.int32),
            jax.ShapeDtypeStruct((KC,), jnp.bool_), jax.ShapeDtypeStruct((), jnp.int32))
    return f, args


def _round_trip(exported):
    restored = export.deserialize(exported.serialize())
    assert restored.platforms == exported.platforms
    assert [(a.shape, a.dtype) for a in restored.out_avals] == [(a.shape, a.dtype) for a in exported.out_avals]
    return restored


@pytest.mark.parametrize("make,cost", [(_forward, splat_forward.cost), (_backward, splat_backward.cost)],
                         ids=["forward", "backward"])
def test_lowers_for_tpu(make, cost):
    f, args = make("tpu")
    exported = _round_trip(export.export(jax.jit(f), platforms=["tpu"])(*args))
    module = exported.mlir_module()
    assert CALL_TARGET["tpu"] in module
    # Mosaic passes the pallas_call's cost_estimate to XLA in the custom call's config.
    flops = re.findall(r"\\22flops\\22:(\d+)", module)
    assert flops == [str(cost(KC, CHUNK, TILES).flops)], flops


@pytest.mark.parametrize("make", [_forward, _backward], ids=["forward", "backward"])
def test_lowers_for_cuda(make):
    f, args = make("gpu")
    mesh = AbstractMesh((1,), ("x",), abstract_device=AbstractDevice("NVIDIA H100 80GB HBM3", None, "cuda"))
    with jax.sharding.use_abstract_mesh(mesh):
        exported = export.export(jax.jit(f), platforms=["cuda"],
                                 disabled_checks=[export.DisabledSafetyCheck.custom_call(CALL_TARGET["gpu"])])(*args)
    assert CALL_TARGET["gpu"] in _round_trip(exported).mlir_module()
