"""Long-audio encoding in overlapping windows vs one pass over the whole signal.

Stated tolerances (random tiny model, LayerNorm feature extractor, 2 s of audio):
- everything before the first attention layer (conv stack, projection, positional conv) is local, so
  it matches the single pass to 1e-4 on every frame;
- after the transformer, interior frames match to a relative L2 error of 0.35 with 0.6 s windows and
  0.25 with 1 s windows (measured 0.27 / 0.19; each window only attends to itself, and a random model's
  attention is nearly uniform, the worst case), shrinking as windows grow. A one-frame misalignment
  would give errors above 1;
- audio that fits one window matches exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.audio.chunked import chunk_layout, encode_long
from avatar_jax.audio.wav2vec2 import Wav2Vec2Model, Wav2Vec2Spec
from avatar_jax.errors import ConfigError


def tiny_model(stable: bool) -> Wav2Vec2Model:
    spec = Wav2Vec2Spec(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, conv_dim=(16,) * 7,
                        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, do_stable_layer_norm=stable,
                        feat_extract_norm="layer" if stable else "group", conv_bias=stable)
    return Wav2Vec2Model(spec, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def audio():
    return 0.3 * jax.random.normal(jax.random.key(1), (2, 32000))


def rel_err(a, b, margin=5):
    a, b = np.asarray(a)[:, margin:-margin], np.asarray(b)[:, margin:-margin]
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.slow  # three window layouts compiled: ~20 s alone, up to 40 s on a loaded 2-core box
def test_chunked_matches_single_pass_in_the_interior(audio):
    model = tiny_model(stable=True)
    full = jax.jit(lambda m, x: m(x))(model, audio)
    local = encode_long(model, audio, chunk=9600, overlap=3200, layer=0)
    assert local.shape == full.hidden_states[0].shape == (2, 99, 32)
    np.testing.assert_allclose(np.asarray(local), np.asarray(full.hidden_states[0]), atol=1e-4)
    short = rel_err(encode_long(model, audio, chunk=9600, overlap=3200), full.last_hidden_state)
    long = rel_err(encode_long(model, audio, chunk=16000, overlap=3200), full.last_hidden_state)
    assert short < 0.35 and long < 0.25
    assert long < short  # more context per window -> closer to the single pass


@pytest.mark.parametrize("stable", [True, False])
def test_audio_within_one_window_is_exact(stable, audio):
    model = tiny_model(stable)
    clip = audio[:, :9600]
    out = encode_long(model, clip, chunk=9600, overlap=3200)
    np.testing.assert_allclose(np.asarray(out), np.asarray(jax.jit(lambda m, x: m(x))(model, clip).last_hidden_state),
                               atol=1e-5)


def test_layout_covers_every_frame_once_with_context_margins():
    hop, chunk, overlap = 320, 9600, 3200
    per_chunk = (chunk - 400) // hop + 1
    for samples in (9600, 9601, 20000, 32000, 100037):
        total = (samples - 400) // hop + 1
        starts, window, local = chunk_layout(samples, chunk, overlap, hop, per_chunk, total)
        assert (np.diff(starts) > 0).all() and starts[-1] + chunk < samples + hop
        assert (np.diff(window) >= 0).all() and window[0] == 0 and window[-1] == len(starts) - 1
        np.testing.assert_array_equal(starts[window] // hop + local, np.arange(total))  # on the global grid
        interior = (np.arange(total) >= 5) & (np.arange(total) < total - 5)
        # about half the 9 common frames of two windows on each side
        assert (local[interior] >= 4).all() and (local[interior] < per_chunk - 4).all()


def test_bad_geometry_is_rejected():
    with pytest.raises(ConfigError, match="multiples of the hop"):
        chunk_layout(32000, 9601, 3200, 320, 29, 99)
    with pytest.raises(ConfigError, match="increase the overlap"):
        chunk_layout(32000, 9600, 320, 320, 29, 99)
    with pytest.raises(ConfigError, match="overlap"):
        encode_long(tiny_model(True), jnp.zeros((1, 32000)), chunk=9600, overlap=9600)
