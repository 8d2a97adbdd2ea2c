import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.audio import checkpoint, whisper
from avatar_jax.audio.text_embedding import transcript_embedding
from avatar_jax.errors import InputError
from avatar_jax.model.fusion import GatedFusion

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "data", "whisper")


@pytest.fixture(scope="module")
def model():
    return checkpoint.load_whisper(GOLDEN)


def test_embedding_of_given_tokens_is_the_upstream_decoder_state(model):
    io = np.load(os.path.join(GOLDEN, "io.npz"))
    mel = io["input_features"][0].T  # (T, n_mels)
    z, tokens = transcript_embedding(model, mel, io["decoder_input_ids"][0])
    assert tokens == io["decoder_input_ids"][0].tolist()
    # upstream's last decoder hidden state (after the final layer norm) for the same tokens
    np.testing.assert_allclose(np.asarray(z), io["decoder_hidden_state_2"][0], atol=1e-4)


def test_transcript_is_decoded_when_not_given_and_long_audio_is_windowed(model):
    io = np.load(os.path.join(GOLDEN, "io.npz"))
    mel = io["input_features"][0].T
    start = [int(io["generate_decoder_start"][0])]
    z, tokens = transcript_embedding(model, mel, prompt=start, max_new_tokens=8)
    expected = whisper.strip_generated(np.concatenate([[start], io["generated"][:1]], 1), 1, model.generation)[0]
    assert tokens == start + expected
    assert z.shape == (len(tokens), model.spec.d_model)
    window = model.spec.max_mel_frames
    long_mel = np.concatenate([mel] * (window // mel.shape[0] + 1))[: window + mel.shape[0]]
    z_long, tokens_long = transcript_embedding(model, long_mel, prompt=start, max_new_tokens=4)
    assert z_long.shape[0] == len(tokens_long) and tokens_long.count(start[0]) >= 2  # two windows, two prompts
    # the fusion pools it into the driving tokens
    fusion = GatedFusion(8, 16, d_z=model.spec.d_model, rngs=nnx.Rngs(0))
    d = fusion(jnp.ones((5, 8)), z_long)
    assert d.shape == (5, 16)


def test_empty_audio_is_rejected(model):
    with pytest.raises(InputError, match="empty audio"):
        transcript_embedding(model, np.zeros((0, model.spec.num_mel_bins)))
