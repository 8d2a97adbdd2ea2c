"""Teacher weight reading: lazy safetensors (single, sharded, bfloat16), refused pickles, corrupt files."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.teacher import checkpoint


def test_lazy_bf16_and_sharded(tmp_path):
    from safetensors.flax import save_file

    a = jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3)
    save_file({"a": a}, str(tmp_path / "model-1.safetensors"))
    save_file({"b": jnp.ones((4,), jnp.float32)}, str(tmp_path / "model-2.safetensors"))
    index = {"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    weights = checkpoint.read_weights(str(tmp_path), "text_encoder")
    assert isinstance(weights, checkpoint.LazyWeights) and sorted(weights) == ["a", "b"]
    assert weights["a"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(weights["a"], np.float32), np.arange(6).reshape(2, 3))
    del weights["b"]
    assert list(weights) == ["a"]
    os.remove(tmp_path / "model-2.safetensors")
    with pytest.raises(checkpoint.TeacherWeightsError, match="model-2.safetensors, which is missing"):
        checkpoint.read_weights(str(tmp_path), "text_encoder")


def test_pickles_refused_and_corrupt_files_named(tmp_path):
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(checkpoint.TeacherWeightsError, match="no pickle is read"):
        checkpoint.read_weights(str(tmp_path), "transformer")
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(checkpoint.TeacherWeightsError, match="cannot read"):
        checkpoint.read_weights(str(tmp_path), "transformer")
