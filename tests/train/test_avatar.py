"""The training avatar of a synthetic dataset: the stored rig, region particles, lip landmarks bound within their
lip, and windows that start from the teacher's pose (numpy and small jnp only: no train step is compiled)."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.config import load_config
from avatar_jax.data import motion, rig, schema, synthetic
from avatar_jax.errors import InputError
from avatar_jax.geometry import se3
from avatar_jax.model.deformer import local_to_world
from avatar_jax.train import avatar as avatar_lib


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A rig of the built-in figure saved as ``prepare --synthetic`` saves it, and the rig itself."""
    r = rig.build_rig(synthetic.figure_from_avatar("synthetic", 400, seed=0), seed=0)
    root = str(tmp_path_factory.mktemp("ds"))
    synthetic.save_rig_avatar(synthetic.avatar_path(root, "synthetic_0"), r)
    return root, r


def controls(frames: int, seed: int = 0) -> motion.Controls:
    rng = np.random.default_rng(seed)
    smooth = lambda x: np.convolve(x, np.ones(5) / 5, mode="same").astype(np.float32)  # noqa: E731
    return motion.Controls(jaw=smooth(rng.uniform(0, 1, frames)), round=smooth(rng.uniform(0, 1, frames)),
                           blink=smooth((rng.uniform(0, 1, frames) > 0.8).astype(float)),
                           nod=smooth(rng.normal(0, 0.05, frames)), yaw=smooth(rng.normal(0, 0.05, frames)),
                           beat=np.stack([smooth(rng.normal(0, 0.1, frames))] * 2, 1))


def config(*overrides):
    return load_config("tiny", ["model.num_particles=24", *overrides])


def test_stored_rig_poses_like_the_rig(stored):
    root, r = stored
    loaded = synthetic.load_rig(synthetic.avatar_path(root, "synthetic_0"))
    c = controls(12)
    np.testing.assert_allclose(rig.bone_transforms(loaded, c), rig.bone_transforms(r, c), atol=1e-6)
    np.testing.assert_array_equal(loaded.region, r.region)


def test_region_particles_and_lip_landmarks_bound_within_their_lip(stored):
    root, r = stored
    trained = avatar_lib.load_training_avatar(config(), root, ["synthetic_0"])
    counts = avatar_lib.scaled_counts(dict(config().model.particle_counts), 24)
    assert sum(counts.values()) == 24 == trained.avatar.num_particles
    assert counts["upper_lip"] >= 2 and counts["lower_lip"] >= 2  # both lips get particles of their own
    region_of_particle = r.region[trained.particle_gaussian]
    assert np.bincount(region_of_particle, minlength=6)[rig.REGION_UPPER_LIP] == counts["upper_lip"]
    # every Gaussian binds only to particles of its own region (the lips never share one)
    bind = np.asarray(trained.avatar.bind_index)
    weight = np.asarray(trained.avatar.bind_weight)
    p_region = region_of_particle[bind]
    assert np.all((p_region == trained.region[:, None]) | (weight < 1e-6))
    rows = np.asarray([33 + schema.FACE_UPPER_LIP, 33 + schema.FACE_LOWER_LIP])
    binding = avatar_lib.landmark_binding(trained.avatar, trained.landmarks, trained.region, 4, rows=rows)
    regions = trained.region[np.asarray(binding.gaussian_index)]
    assert np.all(regions[0] == rig.REGION_UPPER_LIP) and np.all(regions[1] == rig.REGION_LOWER_LIP)
    # bound by coarse part only, the closed mouth's two landmarks share Gaussians of both lips
    plain = avatar_lib.landmark_binding(trained.avatar, trained.landmarks, None, 4, rows=rows)
    assert len(set(trained.region[np.asarray(plain.gaussian_index)].ravel())) > 1


def test_windows_start_from_the_teachers_particle_pose(stored):
    root, r = stored
    trained = avatar_lib.load_training_avatar(config("model.use_body_skinning=false"), root, ["synthetic_0"])
    c = controls(10)
    meta = dataclasses.make_dataclass("Meta", ["extra"])(
        {"controls": {f.name: np.asarray(getattr(c, f.name)).tolist() for f in dataclasses.fields(c)}})
    states = avatar_lib.teacher_start_states(trained, [meta], body_template=False)
    assert len(states) == 1 and states[0].shape == (11, 24, 4, 4)
    np.testing.assert_allclose(states[0][0], np.broadcast_to(np.eye(4), (24, 4, 4)))  # before frame 0: rest
    # before frame s the particles sit where the teacher put their Gaussians at frame s - 1
    means, _ = rig.pose(r, rig.bone_transforms(r, c))
    rest = trained.avatar.particle_rest
    for s in (1, 5, 10):
        posed = se3.apply(local_to_world(jnp.asarray(states[0][s]), rest), rest)
        np.testing.assert_allclose(posed, np.asarray(means)[s - 1, trained.particle_gaussian], atol=1e-5)
    assert np.abs(states[0][5, :, :3, 3]).max() > 1e-3  # the teacher did move them
    # a real video (no controls) has no teacher pose: windows start from rest (or a burn-in)
    assert avatar_lib.teacher_start_states(trained, [meta, dataclasses.replace(meta, extra={})], False) is None


def test_particle_counts_that_do_not_fit_are_refused():
    assert avatar_lib.scaled_counts({"body": 8, "face": 8}, 4) == {"body": 2, "face": 2}
    assert sum(avatar_lib.scaled_counts({"body": 8, "lower_lip": 10, "hands": 20}, 7).values()) == 7
    with pytest.raises(InputError, match="num_particles must be >= 2"):
        avatar_lib.scaled_counts({"body": 8}, 1)
