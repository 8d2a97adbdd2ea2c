"""The golden-file mechanism end to end on one small upstream module (torch MLP, safetensors)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "data", "mlp")


def test_torch_mlp_parity_from_safetensors():
    params = load_file(os.path.join(GOLDEN, "mlp.safetensors"))
    io = np.load(os.path.join(GOLDEN, "mlp_io.npz"))
    # torch Linear stores weight as (out, in): y = x W^T + b
    h = io["x"] @ params["0.weight"].T + params["0.bias"]
    h = jnp.asarray(h)
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    h = (h - mean) / jnp.sqrt(var + 1e-5) * params["1.weight"] + params["1.bias"]
    h = jax.nn.gelu(h, approximate=True)
    y = h @ params["3.weight"].T + params["3.bias"]
    np.testing.assert_allclose(np.asarray(y), io["y"], atol=1e-5)
