"""Training with a pretrained speech encoder (wav2vec2 / HuBERT from a local upstream folder): the features line up
with the frames, the weights come from the folder, stay frozen (or fine-tune at a scaled rate), live in the
checkpoints, and a resume and an export need no folder. Upstream weights: the tiny golden checkpoints that
``make golden`` writes with transformers (tests/golden/data)."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.audio import pretrained
from avatar_jax.audio.checkpoint import load_wav2vec2
from avatar_jax.config import load_config
from avatar_jax.data import synthetic
from avatar_jax.errors import ConfigError
from avatar_jax.train import loop
from avatar_jax.train import state as state_lib
from avatar_jax.train.optimizer import make_optimizer
from avatar_jax.train.sharding import make_mesh

from .synthetic_clips import SIZE, add_held_out, template_avatar

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "data")
HUBERT, WAV2VEC2 = os.path.join(GOLDEN, "hubert"), os.path.join(GOLDEN, "wav2vec2_stable")
SMALL = ["model.num_particles=8", "model.d_model=16", "model.num_heads=2", "train.seq_len=2", "train.batch_size=2",
         "train.log_every=1", "train.warmup_steps=0", "train.capacity_factor=2.0", "train.eval_clips=0",
         "train.image_every=0", "train.checkpoint_every=2", "data.num_threads=1", "train.learning_rate=0.01",
         "mesh.data=1", "mesh.model=-1"]


def config(folder: str, *overrides):
    return load_config("tiny", [*SMALL, "audio.encoder=wav2vec2", f"audio.checkpoint_dir={folder}", *overrides])


def one_device():
    return make_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])


def flat(state) -> dict[str, np.ndarray]:
    return {"/".join(map(str, k)): np.asarray(v.get_value() if isinstance(v, nnx.Variable) else v)
            for k, v in nnx.to_flat_state(nnx.State(state))}


def encoder_part(params) -> dict[str, np.ndarray]:
    return {k[len("driving/encoder/model/"):]: v for k, v in flat(params).items()
            if k.startswith("driving/encoder/model/")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    avatar = template_avatar(str(tmp_path_factory.mktemp("avatar")), 300)
    root = str(tmp_path_factory.mktemp("clips"))
    opts = synthetic.SyntheticOptions(size=SIZE, num_gaussians=300, voices=("en-us",), sentences=2, framing="face")
    synthetic.prepare_synthetic(avatar, root, opts, held_out=0.0, progress=False)
    add_held_out(root, avatar, 300)
    return root


def test_features_cover_every_sample_centred_on_their_window():
    c = pretrained.resolve(config(HUBERT))
    enc = state_lib.initial_model(c).driving.encoder
    hop, rf = enc.hop, enc.model.spec.receptive_field
    assert (hop, rf, enc.feature_rate, enc.dim) == (20, 30, 800.0, 32)
    audio = np.asarray(np.load(os.path.join(HUBERT, "io.npz"))["input_values"][0], np.float32)  # 400 samples
    longer = np.concatenate([audio, audio[::-1]])
    for n in (399, 400, 401, 419, 421):
        assert enc(jnp.asarray(longer[:n])).shape == (-(-n // hop), 32)
    # the same as upstream's model on the audio padded (rf - hop) / 2 = 5 samples left, to whole hops right,
    # after upstream's zero-mean unit-variance normalisation (preprocessor default: no preprocessor_config.json)
    x = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    ref = enc.model(jnp.asarray(np.pad(x, (5, 5)))[None]).last_hidden_state[0]
    np.testing.assert_allclose(enc(jnp.asarray(audio)), ref, atol=1e-5)
    # loudness does not matter to a normalising encoder
    np.testing.assert_allclose(enc(jnp.asarray(3 * audio)), enc(jnp.asarray(audio)), atol=1e-4)


def test_a_hidden_layer_can_drive_the_fusion():
    audio = jnp.asarray(np.load(os.path.join(WAV2VEC2, "io.npz"))["input_values"][0])
    last = state_lib.initial_model(pretrained.resolve(config(WAV2VEC2))).driving.encoder
    first = state_lib.initial_model(pretrained.resolve(config(WAV2VEC2, "audio.encoder_layer=1"))).driving.encoder
    x = (audio - audio.mean()) / jnp.sqrt(audio.var() + 1e-7)
    out = last.model(jnp.pad(x, (5, 5))[None])
    np.testing.assert_allclose(first(audio), out.hidden_states[1][0], atol=1e-5)
    np.testing.assert_allclose(last(audio), out.last_hidden_state[0], atol=1e-5)
    with pytest.raises(ConfigError, match=r"audio.encoder_layer must be in \[-1, 2\]"):
        state_lib.initial_model(pretrained.resolve(config(WAV2VEC2, "audio.encoder_layer=3")))


@pytest.mark.parametrize("overrides,needle", [
    (("audio.encoder=whisper",), "Whisper's encoder reads fixed 30 s windows"),
    (("audio.encoder=hubert2",), "expected one of ['embedded', 'wav2vec2']"),
    (("audio.checkpoint_dir=",), "needs audio.checkpoint_dir"),
    (("audio.encoder_lr_scale=-1",), "encoder_lr_scale must be >= 0"),
])
def test_bad_encoder_settings_are_one_clear_error(overrides, needle):
    with pytest.raises(ConfigError) as e:
        pretrained.resolve(config(HUBERT, *overrides))
    assert needle in str(e.value)


def test_the_stored_architecture_must_match_the_folder(tmp_path):
    c = pretrained.resolve(config(HUBERT))
    spec = json.loads(c.audio.encoder_spec)
    assert spec["model_type"] == "hubert" and spec["hidden_size"] == 32 and spec["normalize"] is True
    assert pretrained.resolve(c).audio.encoder_spec == c.audio.encoder_spec  # a resume re-resolves to the same
    with c.unlocked():
        c.audio.checkpoint_dir = WAV2VEC2
    with pytest.raises(ConfigError, match="holds another architecture"):
        pretrained.resolve(c)
    # a preprocessor_config.json decides the normalisation, and refuses another sampling rate
    folder = shutil.copytree(HUBERT, tmp_path / "h")
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False, "sampling_rate": 16000}))
    assert json.loads(pretrained.resolve(config(str(folder))).audio.encoder_spec)["normalize"] is False
    (folder / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 8000}))
    with pytest.raises(Exception, match="expects 8000 Hz audio"):
        pretrained.resolve(config(str(folder)))


def test_the_frozen_encoder_has_no_optimiser_state_and_no_update():
    c = pretrained.resolve(config(HUBERT))
    opt = make_optimizer(c.train, c.audio)
    # initialised straight into its shards on a data x fsdp x model mesh, the upstream weights in place
    mesh = make_mesh({"data": 2, "fsdp": 2, "model": 2})
    _, state = state_lib.create_state(c, mesh, opt)
    kernel = state.params["driving"]["encoder"]["model"]["projection"]["kernel"]
    assert kernel.get_value().sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")  # (conv_in, embed)
    upstream = flat(nnx.state(load_wav2vec2(HUBERT), nnx.Param))
    for k, v in encoder_part(state.params).items():
        np.testing.assert_array_equal(v, upstream[k], err_msg=k)
    n_encoder = sum(v.size for v in encoder_part(state.params).values())
    n_all = sum(v.size for v in flat(state.params).values())
    moments = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim)
    assert n_encoder > 0.5 * n_all and moments == 2 * (n_all - n_encoder)  # Adam's mu and nu, avatar only
    tuned = make_optimizer(c.train, pretrained.resolve(config(HUBERT, "audio.encoder_lr_scale=0.1")).audio)
    assert sum(x.size for x in jax.tree.leaves(jax.eval_shape(tuned.init, state.params)) if x.ndim) == 2 * n_all
    grads = jax.tree.map(jnp.ones_like, state.params)
    updates, _ = opt.update(grads, state.opt_state, state.params)
    assert all(not v.any() for v in encoder_part(updates).values())  # no step, no weight decay
    assert any(v.any() for k, v in flat(updates).items() if not k.startswith("driving/encoder/"))


def test_training_freezes_the_upstream_weights_resumes_and_exports_without_the_folder(dataset, tmp_path):
    folder = str(shutil.copytree(HUBERT, tmp_path / "hubert"))
    upstream = flat(nnx.state(load_wav2vec2(folder), nnx.Param))
    work = str(tmp_path / "run")
    loop.train(config(folder, "train.steps=2"), work, data_root=dataset, mesh=one_device(), progress=False)
    stored = json.load(open(os.path.join(work, "config.json")))["audio"]
    assert json.loads(stored["encoder_spec"])["model_type"] == "hubert"

    # resume with the workdir's own config (the architecture in it) after the upstream folder is gone
    shutil.rmtree(folder)
    from avatar_jax.train.restore import restore_run

    run = restore_run(work, data_root=dataset)
    first = flat(run.params)
    c = run.config
    with c.unlocked():
        c.train.steps = 4
    summary = loop.train(c, work, data_root=dataset, mesh=one_device(), progress=False)
    assert summary["step"] == 4 and np.isfinite(summary["losses"]).all()
    run = restore_run(work, data_root=dataset)
    after = flat(run.params)
    assert encoder_part(run.params).keys() == upstream.keys()
    for k, v in encoder_part(run.params).items():  # frozen: bit-identical to the upstream weights
        np.testing.assert_array_equal(v, upstream[k], err_msg=k)
    moved = [k for k in after if not k.startswith("driving/encoder/") and not np.array_equal(after[k], first[k])]
    assert len(moved) > 10  # the avatar kept training

    # the bundle's encode stage runs the upstream encoder exactly as the model does
    from avatar_jax.export.from_workdir import export_workdir
    from avatar_jax.export.loader import load_bundle

    out, step = export_workdir(work, str(tmp_path / "bundle"), data_root=dataset, resolutions=[(32, 32)],
                               platforms=["cpu"])
    assert step == 4
    audio = np.asarray(0.1 * np.sin(np.arange(3 * 640) * 0.05) * np.hanning(3 * 640), np.float32)  # 3 frames
    model = nnx.merge(run.graphdef, run.params)
    np.testing.assert_allclose(load_bundle(out).encode(audio), model.driving(jnp.asarray(audio), 3), atol=1e-5)


def test_fine_tuning_moves_the_encoder_at_a_scaled_rate(dataset, tmp_path):
    folder = str(shutil.copytree(HUBERT, tmp_path / "hubert"))
    upstream = flat(nnx.state(load_wav2vec2(folder), nnx.Param))
    work = str(tmp_path / "tuned")
    loop.train(config(folder, "train.steps=2", "audio.encoder_lr_scale=0.5"), work, data_root=dataset,
               mesh=one_device(), progress=False)
    from avatar_jax.train.restore import restore_run

    tuned = encoder_part(restore_run(work, data_root=dataset).params)
    moved = [k for k, v in tuned.items() if not np.array_equal(v, upstream[k])]
    assert len(moved) > len(tuned) // 2
    # Adam moves each weight by at most lr x scale per step (plus decay): 2 steps x 0.01 x 0.5
    assert max(np.abs(tuned[k] - upstream[k]).max() for k in tuned) <= 2 * 0.01 * 0.5 * 1.01 + 1e-6
