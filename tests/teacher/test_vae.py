"""Wan2.1 causal video VAE port: golden parity (one pass and chunked), causality, parameter count, axes."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.teacher import checkpoint, configs, loaders
from avatar_jax.teacher.vae import WanVAE, WanVAESpec
from avatar_jax.train import sharding

VAE_DIR = os.path.join(os.path.dirname(__file__), "..", "golden", "data", "wan_vae")


@pytest.fixture(scope="module")
def golden():
    return loaders.load_wan_vae(VAE_DIR), dict(np.load(os.path.join(VAE_DIR, "io.npz")))


def _cl(x):  # (B, C, T, H, W) -> (B, T, H, W, C)
    return np.asarray(x).transpose(0, 2, 3, 4, 1)


def _encode(vae, video, **kw):  # jit: far faster than op-by-op on CPU
    return jax.jit(lambda m, v: m.encode(v, **kw))(vae, video)


def _decode(vae, z, **kw):
    return jax.jit(lambda m, z: m.decode(z, **kw))(vae, z)


def test_encode_parity_one_pass_and_chunked(golden):
    vae, io = golden
    expected = _cl(io["moments"])
    assert expected.shape == (1, 3, 3, 2, 8)  # 9 frames -> 3 latents, 24x16 -> 3x2, mean | logvar
    np.testing.assert_allclose(_encode(vae, _cl(io["video"])), expected, atol=1e-4)
    np.testing.assert_allclose(_encode(vae, _cl(io["video"]), chunked=True), expected, atol=1e-4)
    # frames past 1 + 4k are dropped, as upstream
    longer = np.concatenate([_cl(io["video"]), _cl(io["video"])[:, :3]], axis=1)
    np.testing.assert_allclose(_encode(vae, longer), expected, atol=1e-4)
    assert np.std(expected) > 0.1


@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_decode_parity_one_pass_and_chunked(golden, chunk):
    vae, io = golden
    out = _decode(vae, _cl(io["z"]), chunk_frames=chunk)
    assert out.shape == (1, 9, 24, 16, 3)
    np.testing.assert_allclose(out, _cl(io["decoded"]), atol=1e-4)
    if chunk == 1:  # clamping changes nothing here (|x| < 1): the raw decode is the same
        np.testing.assert_allclose(_decode(vae, _cl(io["z"]), chunk_frames=chunk, clamp=False),
                                   _cl(io["decoded_raw"]), atol=1e-4)
    assert np.std(io["decoded"]) > 0.1


def test_reconstruction_parity_and_latent_normalisation(golden):
    vae, io = golden
    mean = jax.jit(lambda m, v: m.latent_mean(v))(vae, _cl(io["video"]))
    np.testing.assert_allclose(_decode(vae, mean), _cl(io["recon"]), atol=1e-4)
    np.testing.assert_allclose(vae.denormalize(vae.normalize(mean)), mean, atol=1e-6)
    assert vae.spec.latents_std == (1.5, 0.8, 1.2, 1.0)
    np.testing.assert_allclose(vae.normalize(mean)[..., 1], (mean[..., 1] + 0.2) / 0.8, atol=1e-6)


def test_causal_in_time(golden):
    """Latent frame k depends only on video frames <= 4k; decoded frame t only on latents <= ceil(t/4)."""
    vae, io = golden
    video = _cl(io["video"])
    changed = video.copy()
    changed[:, 5:] = 0.0  # frames 5..8 only feed latent frame 2
    a, b = _encode(vae, video), _encode(vae, changed)
    np.testing.assert_allclose(a[:, :2], b[:, :2], atol=1e-6)
    assert np.abs(a[:, 2] - b[:, 2]).max() > 1e-3
    z = _cl(io["z"])
    z2 = z.copy()
    z2[:, 2] = 0.0  # latent 2 -> frames 5..8
    a, b = _decode(vae, z, clamp=False), _decode(vae, z2, clamp=False)
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-3


def test_wan21_vae_parameter_count_and_axes():
    spec = WanVAESpec()  # the Wan2.1 VAE
    abstract = nnx.eval_shape(lambda: WanVAE(spec, rngs=nnx.Rngs(0)))
    flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    assert sum(math.prod(v.shape) for _, v in flat) == configs.VAE_PARAM_COUNT
    for path, var in flat:
        names = var.get_metadata().get("out_sharding")
        assert names is not None and len(names) == len(var.shape), path
        sharding.logical_to_mesh_spec(tuple(names))
    assert spec.temporal_factor == 4 and spec.spatial_factor == 8


def test_bfloat16_vae_within_tolerance(golden):
    _, io = golden
    vae = loaders.load_wan_vae(VAE_DIR, dtype="bfloat16")
    out = _decode(vae, _cl(io["z"]).astype(jnp.bfloat16))
    err = np.abs(np.asarray(out) - _cl(io["decoded"]))
    assert err.max() < 0.05 and err.mean() < 0.01, (err.max(), err.mean())


def test_missing_and_unsupported_vae(tmp_path):
    with pytest.raises(checkpoint.TeacherWeightsError, match="vae/diffusion_pytorch_model.safetensors"):
        loaders.load_wan_vae(str(tmp_path / "vae"))
    (tmp_path / "config.json").write_text('{"_class_name": "AutoencoderKLWan", "is_residual": true}')
    with pytest.raises(checkpoint.TeacherWeightsError, match="Wan2.2"):
        loaders.load_wan_vae(str(tmp_path))


def test_decode_frames_from_normalised_latents(golden):
    from avatar_jax.teacher.sampler import decode_frames

    vae, io = golden
    z = _cl(io["z"])
    frames = jax.jit(lambda m, x: decode_frames(m, x))(vae, vae.normalize(z))
    assert frames.dtype == jnp.uint8 and frames.shape == (1, 9, 24, 16, 3)
    expected = np.round((_cl(io["decoded"]) + 1) * 127.5)
    assert np.abs(frames.astype(np.float32) - expected).max() <= 1.0
