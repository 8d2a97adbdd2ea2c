"""Embedded audio encoder: interface, shapes, determinism, sensitivity to audio, local attention, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.audio.embedded import EmbeddedAudioEncoder, LocalSelfAttention
from avatar_jax.audio.encoder import AudioEncoder, encode_to_frames
from avatar_jax.errors import InputError
from avatar_jax.train.sharding import LOGICAL_AXIS_RULES, make_mesh, named_sharding


def small(seed=0):
    return EmbeddedAudioEncoder(dim=32, width=32, depth=2, heads=4, block=16, rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def enc():
    return small()


@nnx.jit
def apply(model, audio):
    # one compile per input length instead of op-by-op dispatch (slow on a shared CPU)
    return model(audio)


def voice(rng, seconds, f0=150.0):
    t = np.arange(int(16000 * seconds)) / 16000
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (0.2 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_follows_audio_encoder_interface(enc):
    assert isinstance(enc, AudioEncoder)
    assert (enc.sample_rate, enc.feature_rate, enc.dim) == (16000, 50.0, 32)


@pytest.mark.parametrize("num_samples", [320, 16159, 40000])
def test_output_shape_is_50hz(rng, enc, num_samples):
    out = apply(enc, voice(rng, num_samples / 16000))
    assert out.shape == (EmbeddedAudioEncoder.num_features(num_samples), 32)
    assert out.shape[0] == int(np.ceil((num_samples // 160) / 2))
    assert np.all(np.isfinite(np.asarray(out)))


class JittedEncoder:
    """The protocol is structural: any object with the four members is an encoder (here: a jitted one)."""

    def __init__(self, model):
        self.model = model
        self.sample_rate, self.feature_rate, self.dim = model.sample_rate, model.feature_rate, model.dim
        self.feature_offset_s = model.feature_offset_s

    def __call__(self, audio):
        return apply(self.model, audio)


def test_encode_to_frames_video_rate(rng, enc):
    audio = voice(rng, 2.0)
    jitted = JittedEncoder(enc)
    assert isinstance(jitted, AudioEncoder)
    frames = encode_to_frames(jitted, audio, fps=25.0)
    assert frames.shape == (50, 32)
    assert encode_to_frames(jitted, audio, fps=30.0, num_frames=61).shape == (61, 32)
    # at 25 fps each frame averages two 50 Hz features (offset -10 ms shifts the boxes by half a feature)
    feats = np.asarray(apply(enc, audio))
    np.testing.assert_allclose(np.asarray(frames[10]), 0.25 * feats[20] + 0.5 * feats[21] + 0.25 * feats[22],
                               atol=1e-5)
    with pytest.raises(InputError):
        encode_to_frames(enc, np.zeros((2, 100), np.float32), fps=25.0)


def test_deterministic(rng):
    audio = voice(rng, 1.0)
    a = np.asarray(apply(small(seed=3), audio))
    b = np.asarray(apply(small(seed=3), audio))
    np.testing.assert_array_equal(a, b)
    c = np.asarray(apply(small(seed=4), audio))
    assert np.abs(a - c).mean() > 1e-2  # a different init is a different function


def test_different_audio_gives_different_features(rng, enc):
    a = np.asarray(apply(enc, voice(rng, 1.0, f0=120.0)))
    b = np.asarray(apply(enc, voice(rng, 1.0, f0=240.0)))
    silence = np.asarray(apply(enc, np.zeros(16000, np.float32)))
    rel = np.linalg.norm(a - b) / np.linalg.norm(a)
    assert rel > 0.1, rel
    assert np.linalg.norm(a - silence) / np.linalg.norm(a) > 0.1
    # and within one clip, features vary over time (not a constant)
    assert np.std(a, axis=0).mean() > 1e-2


def test_local_attention_equals_full_attention_within_one_block(rng):
    att = LocalSelfAttention(16, heads=2, block=32, rngs=nnx.Rngs(1))
    x = jnp.asarray(rng.standard_normal((20, 16)), jnp.float32)
    q, k, v = jnp.split(att.qkv(x), 3, axis=-1)
    split = lambda t: t.reshape(20, 2, 8)
    s = jnp.einsum("qhd,khd->hqk", split(q), split(k)) / np.sqrt(8)
    ref = att.proj(jnp.einsum("hqk,khd->qhd", jax.nn.softmax(s, -1), split(v)).reshape(20, 16))
    np.testing.assert_allclose(np.asarray(att(x)), np.asarray(ref), atol=1e-5)


def test_attention_is_local(rng, enc):
    # changing mel frames far in the future must not change early outputs
    mel = jnp.asarray(rng.standard_normal((600, 80)), jnp.float32)
    encode_mel = nnx.jit(lambda m, x: m.encode_mel(x))
    base = np.asarray(encode_mel(enc, mel))
    later = np.asarray(encode_mel(enc, mel.at[500:].set(3.0)))
    # receptive field: 2 layers x (own + next block of 16) + conv context ~ 2*32 + 10 frames at 50 Hz
    np.testing.assert_allclose(later[:150], base[:150], atol=1e-6)
    assert np.abs(later[250:] - base[250:]).max() > 1e-2


def test_jit_and_grad(rng, enc):
    audio = jnp.asarray(voice(rng, 1.0))

    def loss_fn(model, x):
        return jnp.mean(jnp.square(model(x)))

    loss, grads = nnx.jit(nnx.value_and_grad(loss_fn))(enc, audio)
    np.testing.assert_allclose(float(loss), float(jnp.mean(jnp.square(apply(enc, audio)))), rtol=1e-5)
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
    assert len(norms) > 10 and all(np.isfinite(norms)) and sum(n > 0 for n in norms) == len(norms)


def test_every_parameter_has_logical_axes_and_shards_on_a_mesh(enc):
    known = {name for name, _ in LOGICAL_AXIS_RULES}
    mesh = make_mesh({"data": 1, "fsdp": 2, "model": -1})
    params = nnx.state(enc, nnx.Param)
    count = 0
    for path, var in jax.tree.leaves_with_path(params, is_leaf=lambda v: isinstance(v, nnx.Variable)):
        names = var.get_metadata().get("out_sharding")
        assert names is not None and len(names) == var[...].ndim, (path, names)
        assert set(n for n in names if n is not None) <= known, (path, names)
        placed = jax.device_put(var[...], named_sharding(mesh, names))
        assert placed.sharding.spec is not None
        count += 1
    assert count >= 20
