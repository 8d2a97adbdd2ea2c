"""``export_workdir``: the newest checkpoint of a training workdir becomes a bundle carrying exactly the
checkpoint's parameters, the avatar the run deforms and its clips' camera."""

import dataclasses
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from avatar_jax import cli
from avatar_jax.body.template import load_template
from avatar_jax.config import load_config
from avatar_jax.data import index, records, schema
from avatar_jax.export import layout
from avatar_jax.export.from_workdir import export_workdir
from avatar_jax.export.functions import flatten_params
from avatar_jax.export.loader import load_bundle
from avatar_jax.gaussians import avatar_file, init
from avatar_jax.geometry import look_at
from avatar_jax.train import sharding
from avatar_jax.train import state as state_lib
from avatar_jax.train.checkpoint import Checkpointer
from avatar_jax.train.optimizer import make_optimizer

SMALL = ["model.num_particles=8", "model.d_model=16", "model.num_heads=2", "audio.embedded_dim=16",
         "audio.embedded_width=16", "audio.embedded_depth=1", "train.seq_len=2"]
EYE, TARGET = (0.1, 1.4, -2.5), (0.0, 1.3, 0.0)


def _clip(root, camera):
    """One 4-frame clip seen by ``camera`` (contents do not matter to export, the camera does)."""
    t, h, w = 4, camera.height, camera.width
    n = int(schema.audio_bounds(t, 25.0))
    kp = {k: np.zeros((t, *s), np.float32) for k, s in schema.KEYPOINT_SHAPES.items()}
    meta = schema.ClipMeta(clip_id="c0", subject_id="s0", num_frames=t, fps=25.0, width=w, height=h,
                           K=np.asarray(camera.K).tolist(), viewmat=np.asarray(camera.viewmat).tolist(),
                           transcript="x", source="test")
    records.write_clip(str(root), meta, np.zeros((t, h, w, 3), np.uint8), np.zeros((t, h, w), np.uint8),
                       np.zeros(n, np.float32), kp)
    index.build_index(str(root), held_out=0.0)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    avatar_dir = tmp / "avatar"
    avatar_dir.mkdir()
    avatar_file.save_avatar(str(avatar_dir / "avatar.npz"),
                            init.init_on_template(load_template(), 300, seed=0, color=(0.8, 0.6, 0.5)))
    _clip(tmp / "clips", look_at(EYE, TARGET, width=32, height=32, fov_y_deg=40.0))
    config = load_config("tiny", SMALL + [f"train.avatar={avatar_dir}", f"data.root={tmp / 'clips'}"])
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, model=1), jax.devices()[:1])
    _, state = state_lib.create_state(config, mesh, make_optimizer(config.train))
    # a "trained" state: parameters moved off their initialisation
    state = dataclasses.replace(state, params=jax.tree.map(lambda p: p + 0.5, state.params))
    ckpt = Checkpointer(str(tmp / "work"), config, async_save=False)
    ckpt.save(2, state, {"data": {}}, force=True)
    ckpt.save(7, state, {"data": {}}, force=True)
    ckpt.wait()
    return str(tmp / "work"), state


def test_latest_checkpoint_becomes_the_bundle(workdir, tmp_path):
    path, state = workdir
    out, step = export_workdir(path, str(tmp_path / "b"), resolutions=[(32, 32)], platforms=["cpu"])
    assert step == 7
    bundle = load_bundle(out)
    flat, _, _ = flatten_params(state.params)
    stored = load_file(os.path.join(out, layout.PARAMS))
    assert set(stored) == set(flat)
    for k, v in flat.items():
        np.testing.assert_array_equal(stored[k], np.asarray(v), err_msg=k)
    assert bundle.num_gaussians >= 300 and bundle.manifest["source"].endswith("step 7")
    np.testing.assert_allclose(bundle.front["eye"], EYE, atol=1e-5)  # the clips' camera is the front view
    assert bundle.front["fov_y_deg"] == pytest.approx(40.0, abs=1e-4)
    drive = bundle.encode(np.zeros(2 * 640, np.float32))
    assert drive.shape == (2, 16)


def test_export_command_reports_the_step(workdir, tmp_path, capsys):
    path, _ = workdir
    assert cli.main(["export", "--workdir", path, "--out", str(tmp_path / "b"), "--resolution", "32x32",
                     "--platforms", "cpu"]) == 0, capsys.readouterr().err
    assert "step 7" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "b" / layout.FUNCTIONS)) == sorted(
        f"{n}.cpu.jaxexport" for n in ("encode", "motion", "frames_32x32"))
