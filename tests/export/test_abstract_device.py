"""Exports for a device this machine lacks stay callable with a symbolic frame count.

The cuda functions of a bundle are exported on a CPU-only machine through an abstract device. With the
device on a one-axis mesh, the exported dimension arithmetic carried sharding constraints and every call
failed its shape refinement (found on an H200: the bundle deserialised but never ran). The same recipe
for the cpu platform shows it here, where the call can run.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractDevice

from avatar_jax.export.functions import export_with_abstract_device, symbolic_frames


def test_export_through_an_abstract_device_runs_for_any_frame_count():
    t = symbolic_frames()
    cpu = AbstractDevice(jax.devices("cpu")[0].device_kind, None, "cpu")

    def per_frame_energy(audio):  # (640*T,) -> (T,): the shape pattern of the bundle's encode
        return jnp.sum(audio.reshape(-1, 640) ** 2, axis=1) * jnp.arange(1, audio.shape[0] // 640 + 1)

    exported = export_with_abstract_device(per_frame_energy, "cpu", cpu, jax.ShapeDtypeStruct((640 * t,), jnp.float32))
    exported = jax.export.deserialize(exported.serialize())
    for frames in (1, 3, 7):
        audio = np.random.default_rng(frames).normal(size=640 * frames).astype(np.float32)
        np.testing.assert_allclose(exported.call(jnp.asarray(audio)), per_frame_energy(audio), rtol=1e-5)


def test_exported_functions_use_full_float32_matrix_products():
    """A bundle computes the same motion on every platform: no TF32 dots (a GPU's float32 default)."""
    from avatar_jax.export.functions import export_for

    w = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    for platform in ("cpu", "cuda"):
        text = export_for(lambda x: jnp.tanh(x @ w) @ w.T, platform,
                          jax.ShapeDtypeStruct((symbolic_frames(), 8), jnp.float32)).mlir_module()
        dots = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
        assert len(dots) == 2 and all("HIGHEST" in d for d in dots), (platform, dots)
