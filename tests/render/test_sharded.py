"""Sharded rendering on 8 simulated CPU devices equals the single-device render, forward and gradient;
the Mosaic version AOT-compiles for a TPU topology (libtpu in .venv-tpu)."""

import json
import os
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from avatar_jax.errors import InputError
from avatar_jax.geometry import orbit
from avatar_jax.render import render
from avatar_jax.render.renderer import intersection_count
from avatar_jax.render.scenes import random_scene
from avatar_jax.render.sharded import batch_axes, batch_shards, render_sharded
from avatar_jax.train.sharding import make_mesh

BG = (0.2, 0.1, 0.3)
NAMES = ("means", "quats", "scales", "opacities", "colors")


@pytest.fixture(scope="module")
def mesh():
    return make_mesh({"data": 2, "fsdp": 2, "model": 2})


@pytest.fixture(scope="module")
def problem():
    scene = random_scene(np.random.default_rng(3), 48, sh_degree=1)
    cams = orbit(8, radius=4.0, width=24, height=20, elevation_deg=10.0)
    return scene, cams


def _loss(out):
    # Weights that differ per camera and pixel, so a gradient summed over the wrong shards would show.
    w = jnp.linspace(0.5, 1.5, out.rgb.size).reshape(out.rgb.shape)
    return jnp.sum(w * out.rgb) + 0.3 * jnp.sum(out.alpha ** 2) + 0.01 * jnp.sum(out.depth)


def _assert_same_images(out, ref, atol, counts=None):
    for name in ("rgb", "alpha", "depth"):
        np.testing.assert_allclose(np.asarray(getattr(out, name)), np.asarray(getattr(ref, name)), atol=atol,
                                   err_msg=name)
    # Per-camera counts come back in camera order, and nothing overflowed. Counts depend on the backend
    # (the XLA path bins at 8 px), so a cross-backend comparison passes the expected counts.
    expected = ref.n_intersections if counts is None else counts
    np.testing.assert_array_equal(np.asarray(out.n_intersections), np.asarray(expected))
    assert not np.asarray(out.overflow).any()


def test_batch_axes_come_from_the_rules_table(mesh):
    assert batch_axes() == ("data", "fsdp")
    assert batch_shards(mesh) == 4


def test_jitted_sharded_forward_and_gradient_equal_single_device(mesh, problem):
    scene, cams = problem
    capacity = 2048
    ref = render(**scene, camera=cams, background=BG, backend="xla")
    assert float(ref.alpha.max()) > 0.5  # not an empty picture

    def single(g, bg):
        return _loss(render(*g, cams, background=bg, backend="xla", capacity=capacity))

    def sharded(g, c, bg):
        out = render_sharded(mesh, *g, c, background=bg, backend="xla", capacity=capacity)
        return _loss(out), out

    gauss = tuple(jnp.asarray(scene[k]) for k in NAMES)
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    gauss_d = jax.device_put(gauss, replicated)
    cams_d = jax.device_put(cams, split)
    bg = jnp.asarray(BG)
    step = jax.jit(jax.value_and_grad(sharded, argnums=(0, 2), has_aux=True))
    (loss, out), (g_gauss, g_bg) = step(gauss_d, cams_d, bg)
    # The images stay split over the batch axes: each device holds 2 of the 8 cameras.
    assert out.rgb.sharding.spec == PartitionSpec(("data", "fsdp"))
    assert {s.data.shape[0] for s in out.rgb.addressable_shards} == {2}
    _assert_same_images(out, ref, atol=1e-6)

    ref_loss, (ref_gauss, ref_bg) = jax.jit(jax.value_and_grad(single, argnums=(0, 1)))(gauss, bg)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    for name, a, b in zip(NAMES, g_gauss, ref_gauss, strict=True):
        assert float(jnp.abs(b).max()) > 0, name  # every input really gets a gradient
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(np.asarray(g_bg), np.asarray(ref_bg), rtol=1e-5)


def test_eager_per_frame_gaussians_pallas_interpret_equal_single_device(mesh, problem):
    """Different Gaussians for every frame (a talking sequence), split with their cameras; Mosaic kernels."""
    scene, cams = problem
    cams4 = cams[:4]
    shift = np.linspace(-0.3, 0.3, 4, dtype=np.float32)[:, None, None] * np.array([1.0, 0.5, 0.0], np.float32)
    frames = {k: np.stack([v] * 4) for k, v in scene.items()}
    frames["means"] = frames["means"] + shift
    ref = render(**frames, camera=cams4, background=BG, backend="xla")
    out = render_sharded(mesh, **frames, camera=cams4, background=BG, backend="pallas", pallas_platform="tpu",
                         interpret=True)
    counts = [intersection_count(*(frames[k][i] for k in ("means", "quats", "scales")), cams4[i],
                                 opacities=frames["opacities"][i], backend="pallas") for i in range(4)]
    _assert_same_images(out, ref, atol=1e-5, counts=counts)
    # The frames really differ, so a device that rendered the wrong frame's Gaussians would show.
    shared = render(**scene, camera=cams4, background=BG, backend="xla")
    assert float(jnp.abs(shared.rgb - ref.rgb).reshape(4, -1).max(axis=1).min()) > 0.02


def test_bad_batches_are_refused(mesh, problem):
    scene, cams = problem
    with pytest.raises(InputError, match="6 cameras cannot be split evenly over 4 devices"):
        render_sharded(mesh, **scene, camera=cams[:6])
    with pytest.raises(InputError, match="camera must be a batch of cameras"):
        render_sharded(mesh, **scene, camera=cams[0])
    per_frame = {k: np.stack([v] * 4) for k, v in scene.items()}
    with pytest.raises(InputError, match="per-frame Gaussians have 4 frames but there are 8 cameras"):
        render_sharded(mesh, **per_frame, camera=cams)


REPO = Path(__file__).resolve().parents[2]
TPU_PYTHON = REPO / ".venv-tpu" / "bin" / "python"


def test_sharded_pallas_render_and_gradient_aot_compile_for_tpu_v5e_2x2():
    """libtpu in .venv-tpu compiles the Mosaic render over a 4-chip topology, so partitioning errors show here."""
    if not TPU_PYTHON.exists():
        pytest.fail(f"{TPU_PYTHON.relative_to(REPO)} is missing: run `make tpu-venv` (make test builds it)")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([str(TPU_PYTHON), str(REPO / "tests/render/tpu_aot_compile.py"), "--topology", "v5e:2x2",
                           "--mesh", "2,2,1"], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result["platform"], result["device_kind"], result["devices"]) == ("tpu", "TPU v5 lite", 4)
    # Forward: one Mosaic kernel; gradient: the forward's and the backward's. Four SPMD partitions each.
    assert result["forward"]["mosaic_calls"] == 1 and result["grad"]["mosaic_calls"] == 2
    assert result["forward"]["num_partitions"] == 4 and result["grad"]["num_partitions"] == 4
    assert result["forward"]["out_spec"] == "P(('data', 'fsdp'),)"  # images stay split over the batch axes
    # cost_estimate on the pallas_calls: the compiled cost analysis counts the kernels' work.
    for kind in ("forward", "grad"):
        assert result[kind]["flops"] >= result[kind]["kernel_flops_floor"] > 0, result[kind]
    # Without shard_map the partitioner refuses the kernel: the check above is one that can fail.
    assert "Mosaic kernels cannot be automatically partitioned" in result["unsharded_error"]
