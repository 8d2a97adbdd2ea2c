"""``jax.export`` of the full ``render()``, forward and forward+backward, for cpu (xla), tpu and cuda (pallas).

Every export goes through ``serialize()`` / ``jax.export.deserialize``; the cpu one is called and
equals the direct render. Host callbacks would make all of this fail (they cannot be serialized and
do not lower for tpu/cuda), so these tests also guard the renderer against growing one back.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from jax.sharding import AbstractDevice, AbstractMesh, NamedSharding, PartitionSpec

from avatar_jax.geometry import Camera, orbit
from avatar_jax.render import RenderOutput, render
from avatar_jax.render.scenes import random_scene
from avatar_jax.render.sharded import render_sharded
from avatar_jax.train.sharding import MESH_AXES

W, H, CAPACITY = 24, 20, 1024
BG = (0.2, 0.1, 0.3)
TRITON = "__gpu$xla.gpu.triton"
# platform -> (render() settings, custom call the kernels must lower to)
SETTINGS = {
    "cpu": (dict(backend="xla"), None),
    "tpu": (dict(backend="pallas", pallas_platform="tpu", interpret=False), "tpu_custom_call"),
    "cuda": (dict(backend="pallas", pallas_platform="gpu", interpret=False), TRITON),
}
CALLBACK_TARGETS = ("callback", "host_callback")


@pytest.fixture(scope="module")
def inputs():
    scene = random_scene(np.random.default_rng(7), 40, sh_degree=1)
    cams = orbit(2, radius=4.0, width=W, height=H, elevation_deg=10.0)
    gauss = tuple(jnp.asarray(scene[k]) for k in ("means", "quats", "scales", "opacities", "colors"))
    return gauss, cams.viewmat, cams.K, jnp.asarray(BG)


def _functions(platform):
    kwargs, _ = SETTINGS[platform]

    def forward(gauss, viewmat, K, bg, capacity=None):
        # Forward with render()'s defaults (automatic capacity, check_finite=True); training passes capacity.
        return render(*gauss, Camera(viewmat, K, W, H), background=bg, capacity=capacity, **kwargs)

    def loss(gauss, viewmat, K, bg):
        out = forward(gauss, viewmat, K, bg, capacity=CAPACITY)
        w = jnp.linspace(0.5, 1.5, out.rgb.size).reshape(out.rgb.shape)
        return jnp.sum(w * out.rgb) + jnp.sum(out.alpha) + 0.01 * jnp.sum(out.depth), out

    grad = jax.value_and_grad(loss, argnums=(0, 3), has_aux=True)
    return dict(forward=forward, value_and_grad=lambda *a: (lambda r: (r[0][0], r[1]))(grad(*a)), with_image=grad)


def _export(platform, fn, args):
    _, target = SETTINGS[platform]
    if platform != "cuda":
        return export.export(jax.jit(fn), platforms=[platform])(*args)
    # jax 0.12: a CUDA export needs a GPU named for it and Triton's custom call allowed (DESIGN.md).
    mesh = AbstractMesh((1,), ("x",), abstract_device=AbstractDevice("NVIDIA H100 80GB HBM3", None, "cuda"))
    with jax.sharding.use_abstract_mesh(mesh):
        return export.export(jax.jit(fn), platforms=["cuda"],
                             disabled_checks=[export.DisabledSafetyCheck.custom_call(target)])(*args)


def _shapes(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _types(avals):
    # Shapes and dtypes only: a CUDA export's avals also carry the abstract mesh it was made under.
    return [(tuple(a.shape), a.dtype) for a in avals]


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
@pytest.mark.parametrize("kind", ["forward", "value_and_grad"])
def test_pallas_render_exports_for_accelerators(inputs, platform, kind):
    exported = _export(platform, _functions(platform)[kind], _shapes(inputs))
    restored = export.deserialize(exported.serialize())
    assert restored.platforms == (platform,)
    assert _types(restored.in_avals) == _types(exported.in_avals) == _types(jax.tree.leaves(_shapes(inputs)))
    assert _types(restored.out_avals) == _types(exported.out_avals)
    module = restored.mlir_module()
    _, target = SETTINGS[platform]
    # The kernels are there (the gradient also runs the backward kernel), and no host callback is.
    assert module.count(f"custom_call @{target}(") == (2 if kind == "value_and_grad" else 1)
    assert not any(f"{c}" in module for c in ("xla_python_cpu_callback", "xla_ffi_python_cpu_callback",
                                              "xla_python_gpu_callback", "xla_ffi_python_gpu_callback"))


def test_cpu_export_round_trip_equals_direct_call(inputs):
    fns = _functions("cpu")
    exported_fwd = export.deserialize(_export("cpu", fns["forward"], _shapes(inputs)).serialize())
    exported_grad = export.deserialize(_export("cpu", fns["value_and_grad"], _shapes(inputs)).serialize())
    assert exported_fwd.platforms == ("cpu",)

    # One direct (jitted) call gives the image, the loss and the gradients to compare with.
    (ref_value, direct), (ref_gauss, ref_bg) = jax.jit(fns["with_image"])(*inputs)
    assert float(direct.alpha.max()) > 0.5  # a real picture, not an empty frame
    image = exported_fwd.call(*inputs)
    assert isinstance(image, RenderOutput)
    for name in ("rgb", "alpha", "depth"):
        np.testing.assert_allclose(np.asarray(getattr(image, name)), np.asarray(getattr(direct, name)), atol=1e-6,
                                   err_msg=name)
    np.testing.assert_array_equal(np.asarray(image.n_intersections), np.asarray(direct.n_intersections))
    assert np.asarray(image.n_intersections).min() > 0 and not np.asarray(image.overflow).any()

    value, (g_gauss, g_bg) = exported_grad.call(*inputs)
    np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-6)
    for i, (a, b) in enumerate(zip(g_gauss, ref_gauss, strict=True)):
        assert float(jnp.abs(b).max()) > 0, i
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=str(i))
    np.testing.assert_allclose(np.asarray(g_bg), np.asarray(ref_bg), rtol=1e-6)


def test_sharded_triton_render_and_gradient_export_for_four_gpus():
    """The shard_map'd render lowers for a 2x2 mesh of CUDA devices (the Mosaic one is AOT-compiled in test_sharded)."""
    mesh = AbstractMesh((2, 2, 1), MESH_AXES, abstract_device=AbstractDevice("NVIDIA H100 80GB HBM3", None, "cuda"))
    rep, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    n, cams = 64, 8

    def sds(shape, sharding):
        return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)

    gauss = (sds((n, 3), rep), sds((n, 4), rep), sds((n, 3), rep), sds((n,), rep), sds((n, 3), rep))

    def loss(g, viewmat, K):
        out = render_sharded(mesh, *g, Camera(viewmat, K, W, H), capacity=CAPACITY, **SETTINGS["cuda"][0])
        return jnp.sum(out.rgb)

    with jax.sharding.use_abstract_mesh(mesh):
        exported = export.export(jax.jit(jax.value_and_grad(loss)), platforms=["cuda"],
                                 disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON)])(
            gauss, sds((cams, 4, 4), split), sds((cams, 3, 3), split))
    restored = export.deserialize(exported.serialize())
    module = restored.mlir_module()
    assert restored.nr_devices == 4
    assert module.count(f"custom_call @{TRITON}(") == 2  # forward and backward kernels, inside the manual region
    assert module.count("sdy.manual_computation") >= 1
