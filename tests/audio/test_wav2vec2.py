"""wav2vec2 / HuBERT port: parity with transformers on golden checkpoints, masking, sharding metadata."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.audio import checkpoint, layers
from avatar_jax.audio.wav2vec2 import Wav2Vec2Spec, encode_fn, frame_mask_from_lengths, normalize_audio
from avatar_jax.train.sharding import LOGICAL_AXIS_RULES, make_mesh

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "data")

# (golden folder, do_stable_layer_norm, feature-extractor norm, weight file)
CASES = [
    ("wav2vec2_group", False, "group", "model.safetensors"),
    ("wav2vec2_stable", True, "layer", "model.safetensors"),
    ("wav2vec2_ctc_bin", True, "layer", "pytorch_model.bin"),  # "wav2vec2." prefix, weight_g / weight_v
    ("hubert", False, "group", "model.safetensors"),  # no projection LayerNorm
    # independent switches set apart: layer-norm extractor + post-LN encoder, layer_norm_eps 0.1 (not on the
    # extractor norms), feat_extract_activation relu (convs, positional conv) vs hidden_act gelu_new, odd pos kernel
    ("wav2vec2_mixed", False, "layer", "model.safetensors"),
    ("hubert_stable", True, "group", "pytorch_model.bin"),  # pre-LN over group norm, eps 0.1, hidden_act relu
]


@pytest.mark.parametrize("name,stable,norm,weights", CASES)
def test_golden_parity_every_layer(name, stable, norm, weights):
    folder = os.path.join(GOLDEN, name)
    assert os.path.isfile(os.path.join(folder, weights))
    model = checkpoint.load_wav2vec2(folder)
    assert model.spec.do_stable_layer_norm is stable and model.spec.feat_extract_norm == norm
    io = np.load(os.path.join(folder, "io.npz"))
    out = jax.jit(lambda m, x: m(x))(model, io["input_values"])
    assert len(out.hidden_states) == model.spec.num_layers + 1
    for i, h in enumerate(out.hidden_states):
        np.testing.assert_allclose(np.asarray(h), io[f"hidden_state_{i}"], atol=1e-4, err_msg=f"hidden state {i}")
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), io["last_hidden_state"], atol=1e-4)
    if "extract_features" in io:
        np.testing.assert_allclose(np.asarray(out.extract_features), io["extract_features"], atol=1e-4)
    # the outputs are far from trivial (a wrong detail would show): features spread well beyond the tolerance
    assert np.std(io["last_hidden_state"]) > 0.1


def test_audit_goldens_carry_the_settings_they_test():
    mixed = checkpoint.wav2vec2_spec(checkpoint.read_config(os.path.join(GOLDEN, "wav2vec2_mixed")))
    assert (mixed.layer_norm_eps, mixed.feat_extract_activation, mixed.hidden_act, mixed.conv_bias) == (
        0.1, "relu", "gelu_new", True)
    assert mixed.num_conv_pos_embeddings % 2 == 1
    hubert = checkpoint.wav2vec2_spec(checkpoint.read_config(os.path.join(GOLDEN, "hubert_stable")))
    assert (hubert.model_type, hubert.layer_norm_eps, hubert.hidden_act, hubert.feat_proj_layer_norm) == (
        "hubert", 0.1, "relu", True)


def test_padded_batch_matches_unpadded_rows():
    """With a frame mask, padding changes nothing for the valid frames (LayerNorm feature extractor)."""
    model = checkpoint.load_wav2vec2(os.path.join(GOLDEN, "wav2vec2_stable"))
    io = np.load(os.path.join(GOLDEN, "wav2vec2_stable", "io.npz"))
    audio = io["input_values"]
    short = 260
    padded = audio.copy()
    padded[1, short:] = 0.0
    frames = model.spec.num_frames(audio.shape[1])
    mask = frame_mask_from_lengths(model.spec, jnp.asarray([audio.shape[1], short]), frames)
    n_short = model.spec.num_frames(short)
    assert int(mask[1].sum()) == n_short and bool(mask[0].all())
    run = encode_fn(model)
    batched = run(padded, mask)
    alone = run(audio[1:, :short])
    np.testing.assert_allclose(np.asarray(batched[1, :n_short]), np.asarray(alone[0]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(batched[0]), io["last_hidden_state"][0], atol=1e-4)


def test_frame_count_and_hop_match_base_layout():
    spec = Wav2Vec2Spec()
    assert spec.samples_per_frame == 320 and spec.receptive_field == 400
    assert spec.num_frames(16000) == 49  # 1 s of 16 kHz audio -> 49 frames upstream


def test_every_parameter_has_logical_axes_and_shards_on_a_mesh():
    model = checkpoint.load_wav2vec2(os.path.join(GOLDEN, "wav2vec2_group"))
    rules = dict(LOGICAL_AXIS_RULES)
    axes = layers.logical_axes(model)
    params = dict((("/".join(map(str, p))), v) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    assert axes.keys() == params.keys()
    for path, names in axes.items():
        assert names is not None and len(names) == params[path].get_value().ndim, path
        assert all(n is None or n in rules for n in names), (path, names)
    assert axes["layers/0/attention/q_proj/kernel"] == ("embed", "heads")
    assert axes["layers/0/feed_forward/output_dense/kernel"] == ("mlp", "embed")

    mesh = make_mesh({"data": 1, "fsdp": 2, "model": -1})
    specs = layers.partition_specs(model)
    assert specs["layers"][0]["attention"]["q_proj"]["kernel"].get_value() == jax.sharding.PartitionSpec(
        "fsdp", "model")
    graphdef, state = nnx.split(model)
    shardings = jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s.get_value()), specs,
                             is_leaf=lambda x: isinstance(x, nnx.Variable))
    sharded = jax.device_put(nnx.state(model, nnx.Param), shardings)
    io = np.load(os.path.join(GOLDEN, "wav2vec2_group", "io.npz"))
    out = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x).last_hidden_state)(sharded, io["input_values"])
    assert len(sharded["layers"][0]["attention"]["q_proj"]["kernel"].get_value().sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(out), io["last_hidden_state"], atol=1e-4)



def test_normalize_audio_ignores_padding(rng):
    audio = rng.normal(0.3, 2.0, (2, 100)).astype(np.float32)
    mask = np.ones((2, 100), bool)
    mask[1, 60:] = False
    out = np.asarray(normalize_audio(jnp.asarray(audio), jnp.asarray(mask)))
    np.testing.assert_allclose(out[0].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[0].std(), 1.0, atol=1e-4)
    np.testing.assert_allclose(out[1, :60], (audio[1, :60] - audio[1, :60].mean()) / audio[1, :60].std(), atol=1e-4)
    assert (out[1, 60:] == 0).all()
