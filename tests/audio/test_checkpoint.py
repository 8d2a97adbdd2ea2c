"""Checkpoint reading: clear errors for bad directories, sharded files, the torch-free .bin reader."""

import io as _io
import json
import os
import pickle
import shutil
import zipfile

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from avatar_jax.audio import checkpoint
from avatar_jax.audio.checkpoint import CheckpointError
from avatar_jax.audio.torch_pickle import load_torch_state_dict
from avatar_jax.errors import InputError

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "data")
W2V = os.path.join(GOLDEN, "wav2vec2_group")


def copy_golden(tmp_path, name="wav2vec2_group"):
    out = tmp_path / name
    shutil.copytree(os.path.join(GOLDEN, name), out)
    return out


def edit_weights(folder, fn):
    path = folder / "model.safetensors"
    weights = load_file(str(path))
    fn(weights)
    save_file(weights, str(path))


def test_missing_directory_names_what_to_fetch(tmp_path):
    with pytest.raises(CheckpointError, match="facebook/wav2vec2-base-960h"):
        checkpoint.load_wav2vec2(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="openai/whisper-tiny"):
        checkpoint.load_whisper(str(tmp_path / "nope"))


def test_missing_config(tmp_path):
    folder = copy_golden(tmp_path)
    os.remove(folder / "config.json")
    with pytest.raises(CheckpointError, match="no config.json"):
        checkpoint.load_wav2vec2(str(folder))


def test_missing_weights(tmp_path):
    folder = copy_golden(tmp_path)
    os.remove(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="no weights.*model.safetensors"):
        checkpoint.load_wav2vec2(str(folder))


def test_missing_tensor_is_named(tmp_path):
    folder = copy_golden(tmp_path)
    edit_weights(folder, lambda w: w.pop("encoder.layers.1.attention.k_proj.weight"))
    with pytest.raises(CheckpointError, match=r"'encoder\.layers\.1\.attention\.k_proj\.weight' is missing"):
        checkpoint.load_wav2vec2(str(folder))


def test_missing_weight_norm_half_is_named(tmp_path):
    folder = copy_golden(tmp_path)
    edit_weights(folder, lambda w: w.pop("encoder.pos_conv_embed.conv.parametrizations.weight.original0"))
    with pytest.raises(CheckpointError, match=r"parametrizations\.weight\.original0' is missing"):
        checkpoint.load_wav2vec2(str(folder))


def test_wrong_shape_names_tensor_got_and_expected(tmp_path):
    folder = copy_golden(tmp_path)

    def transpose(w):
        w["feature_projection.projection.weight"] = np.ascontiguousarray(w["feature_projection.projection.weight"].T)

    edit_weights(folder, transpose)
    with pytest.raises(CheckpointError, match=r"'feature_projection\.projection\.weight' has shape \(16, 32\), "
                                              r"expected \(32, 16\)"):
        checkpoint.load_wav2vec2(str(folder))


def test_unknown_architecture(tmp_path):
    folder = copy_golden(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"], config["architectures"] = "bert", ["BertModel"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown architecture model_type='bert'"):
        checkpoint.load(str(folder))


def test_whisper_directory_is_not_a_wav2vec2(tmp_path):
    with pytest.raises(CheckpointError, match="not wav2vec2"):
        checkpoint.load_wav2vec2(os.path.join(GOLDEN, "whisper"))


def test_sharded_safetensors_and_dispatch(tmp_path):
    """An index.json over two shards loads to the same model; `load` dispatches on model_type."""
    folder = copy_golden(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    os.remove(folder / "model.safetensors")
    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, names in shards.items():
        save_file({k: weights[k] for k in names}, str(folder / name))
    index = {"metadata": {}, "weight_map": {k: n for n, names in shards.items() for k in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    model = checkpoint.load(str(folder))
    io = np.load(os.path.join(W2V, "io.npz"))
    np.testing.assert_allclose(np.asarray(model(io["input_values"]).last_hidden_state), io["last_hidden_state"],
                               atol=1e-4)
    os.remove(folder / "model-00002-of-00002.safetensors")
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors which is missing"):
        checkpoint.load(str(folder))


def test_torch_pickle_dtypes_views_and_shared_storage():
    state = load_torch_state_dict(os.path.join(GOLDEN, "torch_pickle", "state.bin"))
    expected = np.load(os.path.join(GOLDEN, "torch_pickle", "expected.npz"))
    assert set(state) == set(expected.files)
    assert state["bf16"].dtype.name == "bfloat16" and state["fp16"].dtype == np.float16
    assert state["transposed"].shape == (5, 6) and state["scalar"].shape == ()
    for k in expected.files:
        np.testing.assert_array_equal(state[k].astype(expected[k].dtype), expected[k], err_msg=k)


def _fake_torch_zip(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_torch_pickle_refuses_arbitrary_globals_and_legacy_files(tmp_path):
    _fake_torch_zip(tmp_path / "evil.bin", pickle.dumps({"x": _Evil()}, protocol=2))
    with pytest.raises(InputError, match="refusing to unpickle"):
        load_torch_state_dict(tmp_path / "evil.bin")
    (tmp_path / "legacy.bin").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(InputError, match="not a zip-format PyTorch file"):
        load_torch_state_dict(tmp_path / "legacy.bin")
    buf = _io.BytesIO()
    pickle.dump([1, 2], buf, protocol=2)
    _fake_torch_zip(tmp_path / "list.bin", buf.getvalue())
    with pytest.raises(InputError, match="expected a state dict"):
        load_torch_state_dict(tmp_path / "list.bin")


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_attention_adapters_are_refused_where_upstream_runs_them(tmp_path):
    """adapter_attn_dim adds an adapter to every pre-LN (stable) layer upstream; the post-LN layers ignore it."""
    stable = copy_golden(tmp_path, "wav2vec2_stable")
    edit_config(stable, adapter_attn_dim=8)
    with pytest.raises(CheckpointError, match="adapter_attn_dim=8"):
        checkpoint.load_wav2vec2(str(stable))
    post_ln = copy_golden(tmp_path, "wav2vec2_group")
    edit_config(post_ln, adapter_attn_dim=8)
    assert checkpoint.load_wav2vec2(str(post_ln)).spec.num_layers == 2


def test_add_adapter_refused_for_wav2vec2_only(tmp_path):
    """Wav2Vec2Model runs its adapter after the encoder; HubertModel has none and ignores the field."""
    w2v = copy_golden(tmp_path, "wav2vec2_group")
    edit_config(w2v, add_adapter=True)
    with pytest.raises(CheckpointError, match="add_adapter"):
        checkpoint.load_wav2vec2(str(w2v))
    hubert = copy_golden(tmp_path, "hubert")
    edit_config(hubert, add_adapter=True)
    model = checkpoint.load_wav2vec2(str(hubert))
    io = np.load(os.path.join(GOLDEN, "hubert", "io.npz"))
    np.testing.assert_allclose(np.asarray(model(io["input_values"]).last_hidden_state), io["last_hidden_state"],
                               atol=1e-4)


def test_unsupported_activation_is_a_checkpoint_error(tmp_path):
    whisper_dir = copy_golden(tmp_path, "whisper")
    edit_config(whisper_dir, activation_function="quick_gelu")
    with pytest.raises(CheckpointError, match="unsupported Whisper checkpoint.*quick_gelu"):
        checkpoint.load_whisper(str(whisper_dir))
    w2v = copy_golden(tmp_path, "wav2vec2_group")
    edit_config(w2v, feat_extract_activation="quick_gelu")
    with pytest.raises(CheckpointError, match="unsupported Wav2Vec2 checkpoint.*quick_gelu"):
        checkpoint.load_wav2vec2(str(w2v))


def test_whisper_generation_settings_fall_back_to_config_json(tmp_path):
    """Without generation_config.json, forced_decoder_ids and the rest come from config.json (upstream too)."""
    folder = copy_golden(tmp_path, "whisper_relu")
    os.remove(folder / "generation_config.json")
    edit_config(folder, forced_decoder_ids=[[1, 12]])
    settings = checkpoint.generation_settings(str(folder), checkpoint.read_config(str(folder), "whisper"))
    assert settings.forced_decoder_ids == ((1, 12),) and settings.is_multilingual is None
    assert (settings.decoder_start_token_id, settings.suppress_tokens) == (1, (5, 7))


def test_refused_layouts_name_the_setting(tmp_path):
    hubert = copy_golden(tmp_path, "hubert")
    edit_config(hubert, conv_pos_batch_norm=True)
    with pytest.raises(CheckpointError, match="conv_pos_batch_norm"):
        checkpoint.load_wav2vec2(str(hubert))
    untied = copy_golden(tmp_path, "whisper_relu")
    edit_config(untied, tie_word_embeddings=False)
    with pytest.raises(CheckpointError, match="untied output projection"):
        checkpoint.load_whisper(str(untied))
    other_head = copy_golden(tmp_path, "whisper_scale_embedding")
    edit_weights(other_head, lambda w: w.update({"proj_out.weight": w["model.decoder.embed_tokens.weight"] + 1.0}))
    with pytest.raises(CheckpointError, match="differs from the token embedding"):
        checkpoint.load_whisper(str(other_head))
