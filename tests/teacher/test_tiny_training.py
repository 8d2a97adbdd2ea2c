"""The tiny teacher's training job (``avatar-jax train --config configs/teacher_tiny.py``): VAE phase, latent
normalisation, DiT + audio adapter phase, checkpoints and an exact resume across the phase boundary, loading the
trained teacher; the mouth meter used on its samples; bad configs and workdirs as one-line errors.

The acceptance number (audio-conditioned samples vs audio dropped on held-out speech) comes from a long run and
``python -m avatar_jax.teacher.tiny_eval`` (README, "Video-diffusion teacher"); here the sizes are minimal."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax import cli
from avatar_jax.config import load_config
from avatar_jax.data import index
from avatar_jax.errors import ConfigError, InputError
from avatar_jax.teacher import tiny_eval, tiny_training
from avatar_jax.teacher.teacher import Conditions
from tests.data.fake import fake_clip

CONFIG = "configs/teacher_tiny.py"
SMALL = ["teacher.num_layers=1", "teacher.num_heads=2", "teacher.head_dim=8", "teacher.ffn_dim=16",
         "teacher.adapter_hidden=8", "teacher.n_mels=4", "teacher.vae_base_dim=4", "teacher.vae_z_dim=4",
         "teacher.vae_frames=3", "teacher.vae_steps=3", "train.batch_size=2", "train.seq_len=5", "train.steps=6",
         "train.warmup_steps=1", "train.log_every=1", "train.checkpoint_every=2", "train.keep_checkpoints=5",
         "data.stride=5", "data.num_threads=1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two 16x16 clips whose frame t is filled with t (tests/data/fake.py), as a train split."""
    root = str(tmp_path_factory.mktemp("clips"))
    for k in range(2):
        fake_clip(root, f"c{k}", "s0", 20, h=16, w=16, seed=k)
    index.build_index(root, held_out=0.0)
    return root


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    """One uninterrupted CLI run of 6 steps (3 VAE + 3 DiT), checkpoints every 2 steps."""
    work = str(tmp_path_factory.mktemp("teacher") / "run")
    code = cli.main(["train", "--config", CONFIG, *[f"--config.{o}" for o in SMALL], "--workdir", work,
                     "--data", dataset, "--no-progress"])
    assert code == 0
    return work


def _params(work):
    cfg = load_config(CONFIG, SMALL)
    trainer = tiny_training.trainer_for(cfg)
    from avatar_jax.train.checkpoint import Checkpointer

    with Checkpointer(work, cfg, fingerprint_keys=tiny_training.FINGERPRINT_KEYS) as ckpt:
        state, extra = ckpt.restore(None, trainer.abstract_state())
    return state, extra


def test_job_trains_both_phases_and_resumes_exactly_across_the_boundary(run, dataset, tmp_path, capsys):
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["step"] == 6 and summary["stopped"] == "done" and "tiny teacher" in summary["kind"]
    assert len(summary["losses"]) == 6 and np.isfinite(summary["losses"]).all()
    assert len(summary["latent_mean"]) == 4 and all(s > 0 for s in summary["latent_std"])
    assert sorted(int(p) for p in os.listdir(os.path.join(run, "checkpoints")) if p.isdigit()) == [2, 4, 6]
    full, _ = _params(run)
    assert bool(full["stats_ready"]) and int(full["step"]) == 6

    # A run killed after step 2 (inside the VAE phase): only its step-2 checkpoint is left; rerunning the same
    # command finishes the VAE phase, encodes the windows, trains the DiT and ends on the same parameters.
    work = str(tmp_path / "resumed")
    shutil.copytree(run, work)
    for step in ("4", "6"):
        shutil.rmtree(os.path.join(work, "checkpoints", step))
    code = cli.main(["train", "--config", CONFIG, *[f"--config.{o}" for o in SMALL], "--workdir", work,
                     "--data", dataset, "--no-progress"])
    assert code == 0 and "train (tiny teacher): done at step 6" in capsys.readouterr().out
    resumed, extra = _params(work)
    assert extra["losses"] == pytest.approx(summary["losses"], rel=1e-5)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)

    # The trained teacher as the sampler and the distillation step load it
    cfg, teacher, vae, null_text = tiny_training.load_tiny_teacher(run)
    assert vae.spec.latents_mean == pytest.approx(summary["latent_mean"])
    feats = jnp.ones((1, 5, 4))
    x = jax.random.normal(jax.random.key(0), (1, 3, 4, 4, 4))
    cond = Conditions(text=jnp.broadcast_to(null_text, (1, *null_text.shape[1:])), null_text=null_text, audio=feats)
    eps = teacher.epsilon(x, jnp.array([0.5]), cond)
    eps_dropped = teacher.epsilon(x, jnp.array([0.5]), cond._replace(audio=jnp.zeros_like(feats)))
    assert eps.shape == x.shape and np.isfinite(np.asarray(eps)).all()
    assert float(jnp.abs(eps - eps_dropped).max()) > 0  # the trained adapter moved off its zero init
    frames = vae.decode(vae.denormalize(x))
    assert frames.shape == (1, 5, 16, 16, 3)


def test_incompatible_config_and_wrong_workdirs_are_refused(run, dataset, tmp_path):
    with pytest.raises(ConfigError, match="teacher.num_layers"):
        tiny_training.train_teacher(load_config(CONFIG, SMALL + ["teacher.num_layers=2", "train.steps=8"]), run,
                                    data_root=dataset, progress=False)
    with pytest.raises(InputError, match="not a tiny-teacher workdir"):
        tiny_training.load_tiny_teacher(str(tmp_path))
    early = str(tmp_path / "early")
    shutil.copytree(run, early)
    for step in ("4", "6"):
        shutil.rmtree(os.path.join(early, "checkpoints", step))
    with pytest.raises(InputError, match="stopped before its DiT phase"):
        tiny_training.load_tiny_teacher(early)


@pytest.mark.parametrize("override,needle", [
    ("train.seq_len=6", "needs 1 \\+ 2·n frames"),
    ("teacher.vae_steps=6", "must be in \\[0, train.steps=6\\)"),
    ("teacher.audio_dropout=1.0", "audio_dropout must be in"),
])
def test_config_errors_are_one_line_before_any_work(dataset, tmp_path, override, needle):
    with pytest.raises(ConfigError, match=needle):
        tiny_training.train_teacher(load_config(CONFIG, SMALL + [override]), str(tmp_path / "w"), data_root=dataset,
                                    progress=False)
    assert not os.path.exists(tmp_path / "w")


def test_mouth_meter_reads_the_opening_of_a_dark_mouth_box():
    """Frames with a dark mouth of known height (sub-pixel edges) on a noisy face: the meter fitted on some
    recovers the lip gap of others."""
    rng = np.random.default_rng(0)

    def frames(n):
        gap = rng.uniform(0.3, 3.0, n)
        img = np.full((n, 16, 16, 3), 200.0) + rng.normal(0, 4, (n, 16, 16, 3))
        rows = np.arange(16) + 0.5
        cover = np.clip(np.minimum(rows[None] - 9.0 + 0.5, 9.0 + gap[:, None] - rows[None] + 0.5), 0, 1)  # (n,16)
        img[:, :, 6:11] -= 150.0 * cover[:, :, None, None]
        face = np.zeros((n, 478, 2))
        face[:, 13] = [8.5, 9.0]
        face[:, 14] = np.stack([np.full(n, 8.5), 9.0 + gap], 1)
        face[:, 61], face[:, 291] = [6.0, 9.5], [11.0, 9.5]
        return np.clip(img, 0, 255).astype(np.uint8), face, gap

    f, face, _ = frames(80)
    meter = tiny_eval.MouthMeter.fit(f, face)
    test, _, gap = frames(30)
    assert np.corrcoef(meter(test), gap)[0, 1] > 0.95
    assert np.abs(meter(test) - gap).mean() < 0.3
    with pytest.raises(InputError, match=">= 10 frames"):
        tiny_eval.MouthMeter.fit(f[:5], face[:5])


def test_latent_meter_and_per_latent_frame_grouping():
    vals = np.arange(2 * 9, dtype=float).reshape(2, 9)
    np.testing.assert_allclose(tiny_eval.per_latent_frame(vals, 2), [[0, 1.5, 3.5, 5.5, 7.5], [9, 10.5, 12.5, 14.5,
                                                                                                 16.5]])
    rng = np.random.default_rng(1)
    gap = rng.uniform(0, 3, (60, 5))
    pattern = rng.normal(size=(4, 4, 2))
    latents = gap[..., None, None, None] * pattern + 0.1 * rng.normal(size=(60, 5, 4, 4, 2))
    meter = tiny_eval.LatentMouthMeter.fit(latents[:40], gap[:40], ridge=1.0)
    assert np.corrcoef(meter(latents[40:]).ravel(), gap[40:].ravel())[0, 1] > 0.95
