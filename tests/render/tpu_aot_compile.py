"""AOT-compile the sharded Pallas (Mosaic) render and its gradient for a TPU topology, on a CPU-only machine.

Run with the ``.venv-tpu`` python (libtpu installed, ``make tpu-venv``); tests/render/test_sharded.py
does. libtpu compiles for a topology description without a TPU present: ``get_topology_desc``
makes compile-only devices, and ``jit(...).lower(...).compile()`` on a mesh of them runs the full
TPU compiler, SPMD partitioner and Mosaic included. Prints one JSON line (the last line of stdout).

Usage: python tests/render/tpu_aot_compile.py [--topology v5e:2x2] [--mesh 2,2,1]
"""

from __future__ import annotations

import argparse
import json
import os
import re

# No TPU here: skip the cloud metadata query and keep jax's own backend on the CPU.
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from avatar_jax.kernels import splat_backward, splat_forward  # noqa: E402
from avatar_jax.kernels.splat_common import PIXELS  # noqa: E402
from jax.experimental import topologies  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from avatar_jax.geometry import Camera  # noqa: E402
from avatar_jax.render import render  # noqa: E402
from avatar_jax.render.sharded import batch_axes, render_sharded  # noqa: E402
from avatar_jax.train.sharding import MESH_AXES, make_mesh  # noqa: E402

N, WIDTH, HEIGHT, CAMS_PER_DEVICE, CAPACITY = 512, 64, 48, 2, 8192
PALLAS = dict(backend="pallas", pallas_platform="tpu", interpret=False, capacity=CAPACITY)


def _abstract_inputs(mesh):
    """Shapes with shardings: Gaussians replicated ``(N,...)``, ``B`` cameras split over the batch axes."""
    rep = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec(batch_axes()))
    cams = CAMS_PER_DEVICE * mesh.devices.size

    def sds(shape, sharding):
        return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)

    gauss = (sds((N, 3), rep), sds((N, 4), rep), sds((N, 3), rep), sds((N,), rep), sds((N, 3), rep))
    camera = Camera(sds((cams, 4, 4), split), sds((cams, 3, 3), split), WIDTH, HEIGHT)
    return gauss, camera


def _summary(compiled) -> dict:
    text = compiled.as_text()
    cost = compiled.cost_analysis() or {}
    partitions = re.search(r"num_partitions=(\d+)", text)
    return dict(mosaic_calls=text.count('custom_call_target="tpu_custom_call"'),
                num_partitions=int(partitions.group(1)) if partitions else 1,
                flops=float(cost.get("flops", 0.0)),
                out_spec=str(jax.tree.leaves(compiled.output_shardings)[0].spec))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topology", default="v5e:2x2")
    ap.add_argument("--mesh", default="2,2,1", help="data,fsdp,model sizes")
    args = ap.parse_args()
    topo = topologies.get_topology_desc(args.topology, platform="tpu")
    sizes = dict(zip(MESH_AXES, (int(s) for s in args.mesh.split(",")), strict=True))
    mesh = make_mesh(sizes, devices=topo.devices)
    gauss, camera = _abstract_inputs(mesh)

    def forward(g, c):
        return render_sharded(mesh, *g, c, **PALLAS)

    def loss(g, c):
        out = forward(g, c)
        return jnp.sum(out.rgb) + jnp.sum(out.depth)

    result = dict(topology=args.topology, device_kind=topo.devices[0].device_kind,
                  platform=topo.devices[0].platform, devices=len(topo.devices))
    result["forward"] = _summary(jax.jit(forward).lower(gauss, camera).compile())
    result["grad"] = _summary(jax.jit(jax.grad(loss)).lower(gauss, camera).compile())
    # The kernels' cost_estimate reaches XLA's per-device cost analysis: at least every slot's pixel pairs.
    pairs = CAPACITY * PIXELS
    result["forward"]["kernel_flops_floor"] = splat_forward.FLOPS_PER_PAIR * pairs
    result["grad"]["kernel_flops_floor"] = (splat_forward.FLOPS_PER_PAIR + splat_backward.FLOPS_PER_PAIR) * pairs
    # Control: the same render without shard_map is what the partitioner refuses for Mosaic kernels.
    try:
        jax.jit(lambda g, c: render(*g, c, **PALLAS)).lower(gauss, camera).compile()
        result["unsharded_error"] = None
    except Exception as e:  # noqa: BLE001 - the message is the result
        result["unsharded_error"] = str(e).splitlines()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
