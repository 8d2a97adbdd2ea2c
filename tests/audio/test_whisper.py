"""Whisper port: parity with transformers (every encoder/decoder layer, logits) and greedy tokens."""

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.audio import checkpoint, layers, whisper
from avatar_jax.errors import ConfigError, InputError
from avatar_jax.train.sharding import LOGICAL_AXIS_RULES

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "data", "whisper")


@pytest.fixture(scope="module")
def model():
    return checkpoint.load_whisper(GOLDEN)


@pytest.fixture(scope="module")
def io():
    return np.load(os.path.join(GOLDEN, "io.npz"))


def mel_of(io):
    return io["input_features"].transpose(0, 2, 1)  # upstream (B, n_mels, T) -> ours (B, T, n_mels)


def test_generation_settings_read_from_generation_config(model):
    g = model.generation
    assert (g.decoder_start_token_id, g.eos_token_id, g.pad_token_id) == (1, 2, 0)
    assert g.suppress_tokens == (5, 7) and g.begin_suppress_tokens == (2, 3)


def test_golden_parity_every_layer(model, io):
    enc, dec = jax.jit(lambda m, x, t: m(x, t))(model, mel_of(io), io["decoder_input_ids"])
    assert len(enc.hidden_states) == 3 and len(dec.hidden_states) == 3
    for i, h in enumerate(enc.hidden_states):
        np.testing.assert_allclose(np.asarray(h), io[f"encoder_hidden_state_{i}"], atol=1e-4, err_msg=f"enc {i}")
    for i, h in enumerate(dec.hidden_states):
        np.testing.assert_allclose(np.asarray(h), io[f"decoder_hidden_state_{i}"], atol=1e-4, err_msg=f"dec {i}")
    np.testing.assert_allclose(np.asarray(enc.last_hidden_state), io["encoder_last_hidden_state"], atol=1e-4)
    np.testing.assert_allclose(np.asarray(dec.logits), io["logits"], atol=1e-4)
    assert np.std(io["logits"]) > 0.5


def test_greedy_tokens_match_generate(model, io):
    """KV-cached greedy decoding == transformers `generate(do_sample=False, max_new_tokens=8)`."""
    start = [int(io["generate_decoder_start"][0])]
    tokens = np.asarray(whisper.greedy_decode(model, mel_of(io), start, max_new_tokens=8))
    assert tokens.shape == (2, 9)
    np.testing.assert_array_equal(tokens[:, 0], start * 2)
    np.testing.assert_array_equal(tokens[:, 1:], io["generated"])
    assert len(set(io["generated"].ravel().tolist())) > 1  # not a constant sequence


def test_greedy_stops_at_eos_and_pads(model, io):
    """With token 63 as end of text, row 0 stops after two tokens (upstream strips eos and pads)."""
    settings = dataclasses.replace(model.generation, eos_token_id=63)
    tokens = whisper.greedy_decode(model, mel_of(io), [1], max_new_tokens=8, settings=settings)
    rows = whisper.strip_generated(tokens, 1, settings)
    expected = [[t for t in row if t != 0] for row in io["generated_eos63"].tolist()]
    assert rows == expected and len(rows[0]) < len(rows[1])
    assert np.asarray(tokens)[0, 3] == 63 and (np.asarray(tokens)[0, 4:] == settings.pad_token_id).all()


def test_greedy_with_forced_prompt_matches_full_recompute_reference(model, io):
    tokens = whisper.greedy_decode(model, mel_of(io), io["manual_prompt"], max_new_tokens=8)
    np.testing.assert_array_equal(np.asarray(tokens), io["manual_greedy"])


def test_cached_step_logits_equal_full_pass(model, io):
    mel, ids = mel_of(io), jnp.asarray(io["decoder_input_ids"])
    enc, dec = jax.jit(lambda m, x, t: m(x, t))(model, mel, ids)
    cross = model.decoder.cross_keys_values(enc.last_hidden_state)
    h, dh = model.spec.decoder_attention_heads, model.spec.d_model // model.spec.decoder_attention_heads
    cache = tuple((jnp.zeros((2, 8, h, dh)),) * 2 for _ in range(model.spec.decoder_layers))
    step = jax.jit(lambda m, *args: m.decoder.step(*args))
    for pos in range(ids.shape[1]):
        logits, cache = step(model, ids[:, pos], pos, cache, cross)
        np.testing.assert_allclose(np.asarray(logits), np.asarray(dec.logits[:, pos]), atol=1e-4)


def test_prompt_and_language_detection(model, io):
    langs = (("<|de|>", 40), ("<|en|>", 41), ("<|fr|>", 42))
    settings = whisper.GenerationSettings(decoder_start_token_id=1, eos_token_id=2, pad_token_id=0,
                                          no_timestamps_token_id=50, is_multilingual=True, lang_to_id=langs,
                                          task_to_id=(("transcribe", 45), ("translate", 44)))
    assert whisper.default_prompt(settings, "en") == [1, 41, 45, 50]
    assert whisper.default_prompt(settings, "<|fr|>", "translate") == [1, 42, 44, 50]
    assert whisper.default_prompt(dataclasses.replace(settings, is_multilingual=False)) == [1, 50]
    with pytest.raises(ConfigError, match="unknown language"):
        whisper.default_prompt(settings, "xx")
    detected = np.asarray(whisper.detect_language(model, mel_of(io), settings))
    _, dec = model(mel_of(io), jnp.ones((2, 1), jnp.int32))
    expected = 40 + np.argmax(np.asarray(dec.logits)[:, -1, 40:43], axis=-1)
    np.testing.assert_array_equal(detected, expected)


def test_transcribe_decodes_greedy_tokens_with_the_upstream_tokenizer(model, io, tmp_path):
    """A toy byte-level vocabulary (token i = chr(33 + i)) turns the golden tokens into known text."""
    with pytest.raises(InputError, match="openai/whisper-tiny"):
        whisper.transcribe(model, mel_of(io), str(tmp_path), max_new_tokens=4)
    vocab = {chr(33 + i): i for i in range(94)} | {"<|endoftext|>": 94, "<|startoftranscript|>": 95}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    text = whisper.transcribe(model, mel_of(io), str(tmp_path), max_new_tokens=8)
    assert text == ["".join(chr(33 + t) for t in row) for row in io["generated"].tolist()]


def test_too_long_input_and_wrong_mel_bins_are_rejected(model, io):
    with pytest.raises(InputError, match="at most 32 mel frames"):
        model.encoder(jnp.zeros((1, 34, 8)))
    with pytest.raises(InputError, match="8 mel bins"):
        model.encoder(jnp.zeros((1, 32, 80)))


def test_whisper_parameters_carry_known_logical_axes():
    spec = whisper.WhisperSpec(vocab_size=64, num_mel_bins=8, d_model=16, encoder_layers=1, decoder_layers=1,
                               encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                               decoder_ffn_dim=32, max_source_positions=8, max_target_positions=8)
    model = nnx.eval_shape(lambda: whisper.WhisperModel(spec, rngs=nnx.Rngs(0)))  # metadata only, no init cost
    rules = dict(LOGICAL_AXIS_RULES)
    axes = layers.logical_axes(model)
    assert axes["decoder/embed_tokens/embedding"] == ("vocab", "embed")
    assert axes["encoder/layers/0/mlp/fc1/kernel"] == ("embed", "mlp")
    for path, names in axes.items():
        assert names is not None and all(n is None or n in rules for n in names), path


# Tiny Whisper checkpoints with settings that upstream applies unlike their names suggest (issue 18):
# activation_function only selects the feed-forward activation (the input convs stay GELU), and
# scale_embedding is computed upstream but never applied. Each in both on-disk formats.
VARIANTS = [
    ("whisper_relu", "model.safetensors"),
    ("whisper_relu_bin", "pytorch_model.bin"),
    ("whisper_scale_embedding", "model.safetensors"),
    ("whisper_scale_embedding_bin", "pytorch_model.bin"),
]


def _variant(name):
    folder = os.path.join(GOLDEN, "..", name)
    return folder, checkpoint.load_whisper(folder), np.load(os.path.join(folder, "io.npz"))


@pytest.mark.parametrize("name,weights", VARIANTS)
def test_variant_golden_parity_and_greedy_tokens(name, weights):
    folder, model, io = _variant(name)
    assert os.path.isfile(os.path.join(folder, weights)) and not os.path.isfile(
        os.path.join(folder, "model.safetensors" if weights.endswith(".bin") else "pytorch_model.bin"))
    config = checkpoint.read_config(folder, "whisper")
    if "relu" in name:
        assert config.activation_function == "relu" and model.spec.activation_function == "relu"
    else:
        assert config.scale_embedding is True
    mel = mel_of(io)
    enc, dec = jax.jit(lambda m, x, t: m(x, t))(model, mel, io["decoder_input_ids"])
    for i, h in enumerate(enc.hidden_states):
        np.testing.assert_allclose(np.asarray(h), io[f"encoder_hidden_state_{i}"], atol=1e-4, err_msg=f"enc {i}")
    for i, h in enumerate(dec.hidden_states):
        np.testing.assert_allclose(np.asarray(h), io[f"decoder_hidden_state_{i}"], atol=1e-4, err_msg=f"dec {i}")
    np.testing.assert_allclose(np.asarray(enc.last_hidden_state), io["encoder_last_hidden_state"], atol=1e-4)
    np.testing.assert_allclose(np.asarray(dec.logits), io["logits"], atol=1e-4)
    assert np.std(io["logits"]) > 0.5
    # greedy from the start token alone == generate() before forced_decoder_ids were set
    tokens = np.asarray(whisper.greedy_decode(model, mel, [1], max_new_tokens=8))
    np.testing.assert_array_equal(tokens[:, 1:], io["generated"])
    assert len(set(io["generated"].ravel().tolist())) > 2
    # the saved generation_config has forced_decoder_ids [[1, 10], [2, 11]]: upstream's prompt, like ours
    assert model.generation.forced_decoder_ids == ((1, 10), (2, 11))
    prompt = whisper.default_prompt(model.generation)
    assert prompt == [1, 10, 11]
    tokens = np.asarray(whisper.greedy_decode(model, mel, prompt, max_new_tokens=8))
    np.testing.assert_array_equal(tokens[:, len(prompt):], io["generated_forced"])


def test_input_convs_use_gelu_whatever_the_activation():
    """The relu checkpoint's first hidden state is conv -> GELU -> conv -> GELU + positions, recomputed by hand."""
    _, model, io = _variant("whisper_relu")
    mel = jnp.asarray(mel_of(io))
    gelu = functools.partial(jax.nn.gelu, approximate=False)
    x = gelu(model.encoder.conv2(gelu(model.encoder.conv1(mel))))
    x = x + model.encoder.embed_positions[...][: x.shape[1]]
    np.testing.assert_allclose(np.asarray(x), io["encoder_hidden_state_0"], atol=1e-4)
    relu_x = jax.nn.relu(model.encoder.conv2(jax.nn.relu(model.encoder.conv1(mel))))
    assert np.abs(np.asarray(relu_x + model.encoder.embed_positions[...][: x.shape[1]]) - io[
        "encoder_hidden_state_0"]).max() > 0.05


def test_prompt_follows_upstream_init_token_rules():
    langs = (("<|de|>", 40), ("<|en|>", 41))
    tasks = (("transcribe", 45), ("translate", 44))
    base = whisper.GenerationSettings(decoder_start_token_id=1, eos_token_id=2, pad_token_id=0,
                                      no_timestamps_token_id=50, is_multilingual=True, lang_to_id=langs,
                                      task_to_id=tasks)
    # released multilingual models: language left to detection, task forced; the detected language goes at index 1
    released = dataclasses.replace(base, forced_decoder_ids=((1, None), (2, 44)))
    assert whisper.default_prompt(released) == [1, 44, 50]
    assert whisper._init_tokens(released, None, None) == [1, None, 44, 50]
    # explicit language/task override forced_decoder_ids; language alone means transcribe
    assert whisper.default_prompt(released, "de") == [1, 40, 45, 50]
    assert whisper._init_tokens(released, None, "translate") == [1, None, 44, 50]
    assert whisper.default_prompt(dataclasses.replace(released, lang_to_id=())) == [1, 44, 50]
    # English-only checkpoints (whisper-*.en: forced no-timestamps) take no language or task
    english = whisper.GenerationSettings(decoder_start_token_id=1, eos_token_id=2, pad_token_id=0,
                                         no_timestamps_token_id=50, is_multilingual=False,
                                         forced_decoder_ids=((1, 50),))
    assert whisper.default_prompt(english) == [1, 50]
    with pytest.raises(ConfigError, match="English-only"):
        whisper.default_prompt(english, "en")
    bad = dataclasses.replace(english, forced_decoder_ids=((2, 50),))
    with pytest.raises(ConfigError, match="prompt pattern"):
        whisper.default_prompt(bad)


def test_transcribe_starts_from_the_forced_decoder_ids(tmp_path):
    """transcribe() builds upstream's prompt [start, 10, 11] from generation_config.forced_decoder_ids."""
    _, model, io = _variant("whisper_relu_bin")
    vocab = {chr(33 + i): i for i in range(62)} | {"<|endoftext|>": 62, "<|startoftranscript|>": 63}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    text = whisper.transcribe(model, mel_of(io), str(tmp_path), max_new_tokens=8)
    assert 2 not in io["generated_forced"]  # no end of text: every row runs all 8 tokens
    assert text == ["".join(chr(33 + t) for t in row) for row in io["generated_forced"].tolist()]
