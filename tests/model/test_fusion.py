"""Gated audio/text fusion: shapes, gate range, text dependence, masking, no-text path, jit/grad, sharding axes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.errors import InputError
from avatar_jax.model.fusion import GatedFusion, sinusoidal_encoding
from avatar_jax.train.sharding import LOGICAL_AXIS_RULES

D_A, D_Z, D = 12, 10, 16


@pytest.fixture
def fusion():
    return GatedFusion(D_A, D, d_z=D_Z, pe_dim=8, rngs=nnx.Rngs(0))


@pytest.fixture
def inputs(rng):
    audio = jnp.asarray(rng.standard_normal((20, D_A)), jnp.float32)
    text = jnp.asarray(rng.standard_normal((7, D_Z)), jnp.float32)
    return audio, text


def test_shapes_unbatched_and_batched(fusion, inputs, rng):
    audio, text = inputs
    assert fusion(audio).shape == (20, D)
    assert fusion(audio, text).shape == (20, D)
    b_audio = jnp.asarray(rng.standard_normal((3, 20, D_A)), jnp.float32)
    b_text = jnp.asarray(rng.standard_normal((3, 7, D_Z)), jnp.float32)
    out, gate = fusion(b_audio, b_text, jnp.ones((3, 7), bool), return_gate=True)
    assert out.shape == (3, 20, D) and gate.shape == (3, 20)
    # batching is per-sample: row 1 of the batch equals the unbatched call on sample 1
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(fusion(b_audio[1], b_text[1])), atol=1e-6)


def test_gate_in_unit_interval_and_formula(fusion, inputs):
    audio, text = inputs
    out, gate = fusion(10.0 * audio, text, return_gate=True)
    g = np.asarray(gate)
    assert np.all((g >= 0) & (g <= 1)) and g.std() > 1e-3  # varies with t and audio
    # D = γ·Proj_a(Ã) + (1-γ)·mean(Proj_z(Z))
    d_audio = fusion(10.0 * audio)
    pooled = fusion.proj_z(text).mean(0)
    expected = g[:, None] * np.asarray(d_audio) + (1 - g[:, None]) * np.asarray(pooled)
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)


def test_output_depends_on_text(fusion, inputs):
    audio, text = inputs
    a = np.asarray(fusion(audio, text))
    b = np.asarray(fusion(audio, -text))
    assert np.abs(a - b).mean() > 1e-2


def test_masking_ignores_padded_tokens(fusion, inputs, rng):
    audio, text = inputs
    mask = jnp.asarray([True] * 4 + [False] * 3)
    junk = text.at[4:].set(jnp.asarray(rng.standard_normal((3, D_Z)) * 100, jnp.float32))
    np.testing.assert_allclose(np.asarray(fusion(audio, junk, mask)), np.asarray(fusion(audio, text[:4])),
                               atol=1e-5)


def test_no_text_means_gate_one(fusion, inputs):
    audio, text = inputs
    out, gate = fusion(audio, return_gate=True)
    assert np.all(np.asarray(gate) == 1.0)
    pe = sinusoidal_encoding(jnp.arange(20), 8)
    np.testing.assert_allclose(np.asarray(out), np.asarray(fusion.proj_a(jnp.concatenate([pe, audio], -1))),
                               atol=1e-6)
    # an all-padding transcript behaves as no transcript
    np.testing.assert_allclose(np.asarray(fusion(audio, text, jnp.zeros(7, bool))), np.asarray(out), atol=1e-6)
    audio_only = GatedFusion(D_A, D, pe_dim=8, rngs=nnx.Rngs(0))
    assert audio_only(audio).shape == (20, D)
    with pytest.raises(InputError, match="without a text branch"):
        audio_only(audio, text)


def test_positional_encoding_distinguishes_frames(fusion):
    constant = jnp.ones((30, D_A))
    out = np.asarray(fusion(constant))
    assert np.abs(out[0] - out[29]).mean() > 1e-3
    shifted = np.asarray(fusion(constant, frame_offset=10))
    np.testing.assert_allclose(shifted[:20], out[10:], atol=1e-5)
    pe = np.asarray(sinusoidal_encoding(jnp.arange(4), 6))
    np.testing.assert_allclose(pe[:, 0], np.sin(np.arange(4)), atol=1e-6)
    np.testing.assert_allclose(pe[:, 3], np.cos(np.arange(4)), atol=1e-6)


def test_jit_and_grad(fusion, inputs):
    audio, text = inputs
    mask = jnp.asarray([True] * 5 + [False] * 2)

    def loss(model, a, z, m):
        return jnp.mean(jnp.square(model(a, z, m)))

    value, grads = nnx.jit(nnx.value_and_grad(loss))(fusion, audio, text, mask)
    np.testing.assert_allclose(float(value), float(loss(fusion, audio, text, mask)), rtol=1e-5)
    for name in ("proj_a", "proj_z", "gate"):
        g = getattr(grads, name).kernel[...]
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, name
    # padded tokens get no gradient through the input either
    dz = jax.grad(lambda z: loss(fusion, audio, z, mask))(text)
    assert np.all(np.asarray(dz[5:]) == 0) and np.abs(np.asarray(dz[:5])).max() > 0


def test_params_have_logical_axes(fusion):
    known = {name for name, _ in LOGICAL_AXIS_RULES}
    leaves = jax.tree.leaves(nnx.state(fusion, nnx.Param), is_leaf=lambda v: isinstance(v, nnx.Variable))
    assert len(leaves) == 6
    for var in leaves:
        names = var.get_metadata()["out_sharding"]
        assert len(names) == var[...].ndim and set(n for n in names if n is not None) <= known


def test_bad_shapes(fusion):
    with pytest.raises(InputError):
        fusion(jnp.zeros((5, D_A + 1)))
    with pytest.raises(AssertionError):
        fusion(jnp.zeros((2, 5, D_A)), jnp.zeros((3, 4, D_Z)))
