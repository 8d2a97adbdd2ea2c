"""Bundles: a fresh process renders what the training-side model + renderer render; every platform's
functions deserialize with a symbolic frame count; the stored files are standard and complete."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from avatar_jax.errors import InputError
from avatar_jax.export import layout
from avatar_jax.export.functions import flatten_params
from avatar_jax.export.loader import load_bundle
from avatar_jax.gaussians.ply import read_ply
from avatar_jax.geometry import Camera
from avatar_jax.inference.cameras import camera_path
from avatar_jax.render import intersection_count, render

from .conftest import RES, speech_like

FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    from avatar_jax.export.loader import load_bundle
    from avatar_jax.inference.cameras import camera_path
    from avatar_jax.inference.stream import stream_frames

    bundle_path, audio_path, out_path = sys.argv[1:4]
    bundle = load_bundle(bundle_path)
    path = camera_path(bundle.front, 64, 64, "orbit", period_frames=20)
    batches = list(stream_frames(bundle, np.load(audio_path), path, chunk=5))
    np.save(out_path, np.concatenate([b.rgb for b in batches]))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("flax", "optax", "orbax", "grain")
                    or m.startswith(("avatar_jax.train", "avatar_jax.model", "avatar_jax.export.bundle")))
    print(json.dumps(dict(loaded=loaded, batches=[len(b.rgb) for b in batches])))
""")


def training_side_frames(exp, audio, viewmats, Ks, capacity, chunk):
    """The training-side model (TalkingAvatar's driving encoder on the clip's audio, then its motion ``chunk``
    frames at a time with the carry, as ``avatar.stream`` runs it) and the renderer, frame by frame."""
    driving = jax.jit(lambda p, a: nnx.merge(exp.graphdef, p).driving(a))(exp.params, jnp.asarray(audio))
    motion = jax.jit(lambda p, d, c: nnx.merge(exp.graphdef, p).motion(exp.avatar, d, c))
    carry, pieces = nnx.merge(exp.graphdef, exp.params).motion.init_carry(exp.avatar), []
    for s in range(0, driving.shape[0], chunk):
        piece, carry = motion(exp.params, driving[s:s + chunk], carry)
        pieces.append(piece)
    out = jax.tree.map(lambda *xs: jnp.concatenate(xs), *pieces)
    bg = jnp.asarray(exp.config.render.background, jnp.float32)

    def one(m, q, s, o, c, v, k):
        return render(m, q, s, o, c, Camera(v, k, *RES), background=bg, capacity=capacity, backend="xla",
                      check_finite=False).rgb

    return np.asarray(jax.jit(jax.vmap(one))(out.means, out.quats, out.scales, out.opacities, out.colors,
                                             jnp.asarray(viewmats), jnp.asarray(Ks)))


def test_fresh_process_renders_what_training_renders(tiny_bundle, tmp_path):
    frames = 33
    audio = speech_like(frames * 640 / 16000)  # whole frames: the clip a training window would hold
    np.save(tmp_path / "audio.npy", audio)
    res = subprocess.run([sys.executable, "-c", FRESH_PROCESS, tiny_bundle.path, str(tmp_path / "audio.npy"),
                          str(tmp_path / "rgb.npy")], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []  # no flax, no optimiser, no model or training code
    assert report["batches"] == [5] * 6 + [3]  # streamed in chunks of 5 frames, carried across them
    got = np.load(tmp_path / "rgb.npy")

    manifest = json.load(open(os.path.join(tiny_bundle.path, layout.MANIFEST)))
    front = load_bundle(tiny_bundle.path).front
    viewmats, Ks = camera_path(front, *RES, "orbit", period_frames=20).cameras(np.arange(frames))
    want = training_side_frames(tiny_bundle, audio, viewmats, Ks, manifest["resolutions"][0]["capacity"], 5)
    assert got.shape == want.shape == (frames, RES[1], RES[0], 3)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # a real, moving picture: the figure covers pixels and frames differ over time
    bg = np.asarray(tiny_bundle.config.render.background)
    assert np.mean(np.abs(want[0] - bg).sum(-1) > 0.05) > 0.05
    assert np.abs(want[1:] - want[:-1]).max() > 0.05


@pytest.mark.parametrize("platform,kernel", [("cuda", "__gpu$xla.gpu.triton"), ("tpu", "tpu_custom_call")])
def test_accelerator_exports_deserialize_with_symbolic_frames(tiny_bundle, platform, kernel):
    bundle = load_bundle(tiny_bundle.path, platform=platform)
    for name in ("encode", "motion", layout.frames_name(*RES)):
        fn = bundle.exported(name)
        assert fn.platforms == (platform,)
        frame_axis = fn.in_avals[-1 if name in ("encode", "motion") else 5].shape[0]  # audio / driving / viewmats
        assert not isinstance(frame_axis, int), (name, fn.in_avals)  # symbolic T
        module = fn.mlir_module()
        assert "callback" not in module
        if name.startswith("frames"):
            assert f"custom_call @{kernel}(" in module  # the Pallas kernel, not the XLA fallback


def test_cpu_functions_take_any_frame_count(tiny_bundle):
    bundle = load_bundle(tiny_bundle.path)
    d = bundle.manifest["d_model"]
    for t in (5, 33):  # the chunk and clip lengths the render tests use (compiled once)
        drive = bundle.encode(speech_like(t * 640 / 16000))
        assert drive.shape == (t, d)
        gauss, carry = bundle.motion(bundle.initial_carry, drive)
        assert gauss["means"].shape == (t, bundle.num_gaussians, 3)
        assert jax.tree.map(jnp.shape, carry) == jax.tree.map(jnp.shape, bundle.initial_carry)


def test_bundle_files_are_standard_and_complete(tiny_bundle):
    p = tiny_bundle.path
    flat, _, _ = flatten_params(tiny_bundle.params)
    stored = load_file(os.path.join(p, layout.PARAMS))
    assert set(stored) == set(flat)
    for k, v in flat.items():
        np.testing.assert_array_equal(stored[k], np.asarray(v))
    ply = read_ply(os.path.join(p, layout.AVATAR_PLY))
    np.testing.assert_allclose(ply["means"], np.asarray(tiny_bundle.avatar.means), atol=1e-7)
    np.testing.assert_allclose(ply["log_scales"], np.asarray(tiny_bundle.avatar.log_scales), atol=1e-5)
    bundle = load_bundle(p)
    np.testing.assert_array_equal(np.asarray(bundle.avatar["bind_index"]), np.asarray(tiny_bundle.avatar.bind_index))
    assert bundle.config["model"]["d_model"] == 32 and bundle.fps == 25.0 and bundle.samples_per_frame == 640
    assert sorted(bundle.manifest["platforms"]) == ["cpu", "cuda", "tpu"]
    cap = bundle.manifest["resolutions"][0]["capacity"]
    ri = tiny_bundle.avatar.render_inputs()
    front = camera_path(bundle.front, *RES).cameras(np.zeros(1))
    rest = intersection_count(ri["means"], ri["quats"], ri["scales"], Camera(front[0][0], front[1][0], *RES))
    assert cap % 1024 == 0 and 4 * rest <= cap < 4 * 2 * rest + 1024  # room for motion, not a blind maximum
    assert not [n for n in os.listdir(os.path.dirname(p)) if n.startswith(".bundle-")]  # temp folder gone


def test_missing_or_foreign_bundles_are_refused(tiny_bundle, tmp_path):
    with pytest.raises(InputError, match="no such bundle"):
        load_bundle(str(tmp_path / "nope"))
    (tmp_path / "photos").mkdir()
    with pytest.raises(InputError, match="not an avatar-jax bundle"):
        load_bundle(str(tmp_path / "photos"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / layout.MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match="not an avatar-jax bundle"):
        load_bundle(str(tmp_path / "other"))
    (tmp_path / "broken").mkdir()
    for name in (layout.MANIFEST, layout.CONFIG, layout.AVATAR_NPZ):
        (tmp_path / "broken" / name).write_bytes(open(os.path.join(tiny_bundle.path, name), "rb").read())
    (tmp_path / "broken" / layout.PARAMS).write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="unreadable params.safetensors"):
        load_bundle(str(tmp_path / "broken"))
    with pytest.raises(InputError, match="exported for"):
        load_bundle(tiny_bundle.path, platform="rocm")
