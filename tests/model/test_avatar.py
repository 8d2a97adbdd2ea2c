"""The audio-driven avatar: rest pose, streaming, scan, dtypes, ablations, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avatar_jax.config import load_config
from avatar_jax.model import avatar as avatar_lib
from avatar_jax.model.avatar import AudioDrivenAvatar, ModelSwitches, forward, stream
from avatar_jax.model.canonical import PART_FACE, PART_HANDS, synthetic_avatar
from avatar_jax.train import sharding

ABLATIONS = ["particle_deformer", "implicit_motion_tokens", "weight_decoder", "face_offsets", "hand_offsets",
             "body_offsets", "gaussian_head", "body_skinning"]


def model_config(**overrides):
    c = load_config("tiny")
    with c.unlocked():
        c.model.num_particles = 24
        c.model.d_model = 32
        c.model.num_heads = 4
        for k, v in overrides.items():
            c.model[k] = v
    return c.model


def build(seed=0, **overrides):
    cfg = model_config(**overrides)
    model = AudioDrivenAvatar(cfg, nnx.Rngs(seed))
    return cfg, model


def perturbed(state, key, scale=0.1):
    """A trained-looking state: every parameter (including zero-initialised outputs) nudged."""
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype)
                                        for x, k in zip(leaves, keys, strict=True)])


@pytest.fixture(scope="module")
def avatar():
    return synthetic_avatar(256, 24, seed=0)


def test_fresh_model_with_zero_audio_holds_the_rest_pose(avatar):
    cfg, model = build()
    graphdef, state = nnx.split(model)
    out, _ = jax.jit(forward, static_argnums=0)(graphdef, state, avatar, jnp.zeros((5, cfg.d_model)))
    rest = avatar.render_inputs()
    for name in ["means", "quats", "scales", "opacities", "colors"]:
        got = np.asarray(getattr(out, name))
        np.testing.assert_allclose(got, np.broadcast_to(np.asarray(rest[name]), got.shape), atol=1e-5, err_msg=name)


def test_trained_model_moves_and_depends_on_audio(avatar, key):
    cfg, model = build()
    graphdef, state = nnx.split(model)
    state = perturbed(state, key)
    f = jax.jit(forward, static_argnums=0)
    d1 = jax.random.normal(jax.random.key(1), (6, cfg.d_model))
    d2 = jax.random.normal(jax.random.key(2), (6, cfg.d_model))
    out1, _ = f(graphdef, state, avatar, d1)
    out2, _ = f(graphdef, state, avatar, d2)
    assert float(jnp.abs(out1.means - avatar.means).max()) > 1e-3
    assert float(jnp.abs(out1.means - out2.means).max()) > 1e-4
    # posed quaternions stay unit, opacities in [0,1], scales positive
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out1.quats), axis=-1), 1.0, atol=1e-5)
    assert np.all((np.asarray(out1.opacities) >= 0) & (np.asarray(out1.opacities) <= 1))
    assert np.all(np.asarray(out1.scales) > 0)


def test_streaming_in_chunks_equals_one_pass(avatar, key):
    # 0.1 noise on every weight at the default twist scale (0.1) moves particles by up to 0.5 m a frame,
    # where float rounding differs by ~1e-5 m between compilations; 0.01 keeps the motion realistic.
    cfg, model = build(twist_scale=0.01)
    graphdef, state = nnx.split(model)
    state = perturbed(state, key)
    driving = jax.random.normal(jax.random.key(3), (11, cfg.d_model))
    one, _ = jax.jit(forward, static_argnums=0)(graphdef, state, avatar, driving)
    for chunk in (1, 3, 4):
        chunks = stream(graphdef, state, avatar, driving, chunk)
        for name in ["means", "quats", "scales", "opacities", "colors", "particle_transforms"]:
            np.testing.assert_allclose(getattr(chunks, name), getattr(one, name), atol=1e-5,
                                       err_msg=f"{name} chunk={chunk}")


def test_deformer_jaxpr_contains_scan(avatar):
    cfg, model = build()
    graphdef, state = nnx.split(model)
    jaxpr = jax.make_jaxpr(lambda s, d: forward(graphdef, s, avatar, d))(state, jnp.zeros((4, cfg.d_model)))

    def has_scan(jp):
        for eqn in jp.eqns:
            if eqn.primitive.name == "scan":
                return True
            for v in eqn.params.values():
                inner = getattr(v, "jaxpr", v)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns") and has_scan(inner):
                    return True
        return False

    assert has_scan(jaxpr.jaxpr)


def test_boundary_checks(avatar):
    cfg, model = build()
    with pytest.raises(ValueError, match="d_model=32"):
        model(avatar, jnp.zeros((3, 7)))
    with pytest.raises(AssertionError):
        model(avatar, jnp.zeros((3,)))
    other = synthetic_avatar(64, 10)
    with pytest.raises(ValueError, match="built for 24 particles"):
        model(other, jnp.zeros((3, cfg.d_model)))


def test_bf16_compute_with_f32_params(avatar, key):
    cfg32, model32 = build()
    cfg16, model16 = build(compute_dtype="bfloat16")
    g32, s32 = nnx.split(model32)
    g16, s16 = nnx.split(model16)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(s16))
    s32 = perturbed(s32, key)
    driving = jax.random.normal(jax.random.key(4), (4, cfg32.d_model))
    out32, _ = jax.jit(forward, static_argnums=0)(g32, s32, avatar, driving)
    out16, _ = jax.jit(forward, static_argnums=0)(g16, s32, avatar, driving)  # same weights, bf16 compute
    assert out16.means.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(out16.means)))
    motion32 = np.asarray(out32.means - avatar.means)
    motion16 = np.asarray(out16.means - avatar.means)
    assert np.abs(motion16 - motion32).max() < 0.05 * np.abs(motion32).max() + 1e-4


@pytest.mark.parametrize("switch", ABLATIONS)
def test_each_ablation_removes_a_real_path(avatar, key, switch):
    cfg, model = build(**{f"use_{switch}": False})
    full_cfg, full = build()
    assert getattr(ModelSwitches.from_config(cfg), switch) is False
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    n_full = sum(x.size for x in jax.tree.leaves(nnx.state(full, nnx.Param)))
    graphdef, state = nnx.split(model)
    state = perturbed(state, key)
    driving = jax.random.normal(jax.random.key(5), (3, cfg.d_model))
    out, _ = jax.jit(forward, static_argnums=0)(graphdef, state, avatar, driving)
    part = np.asarray(avatar.part)
    moved = np.abs(np.asarray(out.means - avatar.means)).max(axis=(0, 2))
    recolored = np.abs(np.asarray(out.colors - avatar.colors)).max(axis=(0, 2))
    if switch == "implicit_motion_tokens":
        assert not hasattr(model.deformer, "motion_tokens") and hasattr(model.deformer, "rest_proj")
    else:
        assert n_params < n_full
    if switch == "particle_deformer":
        assert model.deformer is None
        np.testing.assert_allclose(np.asarray(out.particle_transforms),
                                   np.broadcast_to(np.eye(4), out.particle_transforms.shape))
    if switch == "face_offsets":
        assert recolored[part == PART_FACE].max() == 0 and recolored[part != PART_FACE].max() > 0
    if switch == "hand_offsets":
        assert recolored[part == PART_HANDS].max() == 0 and recolored[part != PART_HANDS].max() > 0
    if switch == "gaussian_head":
        assert model.head is None and recolored.max() == 0
    if switch == "weight_decoder":
        assert model.weight_decoder is None
    if switch == "body_skinning":
        assert model.body_motion is None
    assert moved.max() > 0  # the avatar still moves through the remaining paths


def test_sharded_forward_equals_single_device(avatar, key):
    cfg, model = build()
    graphdef, state = nnx.split(model)
    state = perturbed(state, key)
    driving = jax.random.normal(jax.random.key(6), (2, 4, cfg.d_model))  # batch of 2 sequences

    def batched(s, av, d):
        return jax.vmap(lambda x: forward(graphdef, s, av, x)[0])(d)

    single = jax.jit(batched)(state, avatar, driving)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 1, "model": 4})
    state_sh = jax.device_put(state, sharding.state_shardings(mesh, state))
    driving_sh = jax.device_put(driving, sharding.named_sharding(mesh, ("batch", None, None)))
    av_sh = jax.tree.map(
        lambda x: jax.device_put(x, sharding.named_sharding(mesh, ("gaussians",) + (None,) * (x.ndim - 1)))
        if x.shape[0] == avatar.num_gaussians else jax.device_put(x, sharding.named_sharding(mesh, ())), avatar)
    with jax.set_mesh(mesh):
        sharded = jax.jit(batched)(state_sh, av_sh, driving_sh)
    assert len(sharded.means.sharding.device_set) == 8
    assert any(len(x.sharding.device_set) > 1 and not x.sharding.is_fully_replicated
               for x in jax.tree.leaves(state_sh))
    for name in ["means", "quats", "scales", "opacities", "colors"]:
        np.testing.assert_allclose(getattr(sharded, name), getattr(single, name), atol=1e-5, err_msg=name)


def test_carry_starts_at_rest(avatar):
    cfg, model = build()
    carry = model.init_carry(avatar)
    np.testing.assert_allclose(carry.transforms, np.broadcast_to(np.eye(4), (24, 4, 4)))
    assert carry.window.shape == (cfg.window - 1, cfg.d_model) and not np.any(np.asarray(carry.valid))
    assert avatar_lib.Carry is type(carry)


def test_part_sorted_fast_path_equals_masked_path(avatar, key):
    import dataclasses as dc

    assert avatar.part_counts is not None and sum(avatar.part_counts) == avatar.num_gaussians
    unsorted = dc.replace(avatar, part_counts=None)
    cfg, model = build()
    graphdef, state = nnx.split(model)
    state = perturbed(state, key)
    driving = jax.random.normal(jax.random.key(7), (3, cfg.d_model))
    f = jax.jit(forward, static_argnums=0)
    fast, _ = f(graphdef, state, avatar, driving)
    masked, _ = f(graphdef, state, unsorted, driving)
    for name in ["means", "scales", "opacities", "colors"]:
        np.testing.assert_allclose(getattr(fast, name), getattr(masked, name), atol=1e-6, err_msg=name)


def test_fresh_model_renders_identical_to_the_canonical_avatar(avatar):
    from avatar_jax.geometry import camera as cam_lib
    from avatar_jax.render import render

    cfg, model = build()
    graphdef, state = nnx.split(model)
    out, _ = jax.jit(forward, static_argnums=0)(graphdef, state, avatar, jnp.zeros((2, cfg.d_model)))
    cam = cam_lib.look_at(eye=(0.0, 0.3, -3.0), target=(0.0, 0.3, 0.0), width=32, height=32, fov_y_deg=40.0)
    rest = render(**avatar.render_inputs(), camera=cam, background=(1.0, 1.0, 1.0), backend="xla")
    assert float(rest.alpha.max()) > 0.5  # the avatar is in view
    for t in range(2):
        posed = render(**out.frame(t), camera=cam, background=(1.0, 1.0, 1.0), backend="xla")
        np.testing.assert_allclose(posed.rgb, rest.rgb, atol=1e-5)
        np.testing.assert_allclose(posed.alpha, rest.alpha, atol=1e-5)


def test_every_parameter_has_logical_sharding_axes():
    _, model = build()
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    assert len(flat) > 20
    for path, var in flat:
        names = var.get_metadata().get("out_sharding")
        assert names is not None, f"{'/'.join(map(str, path))} has no logical axes"
        assert len(names) == var[...].ndim, f"{path}: axes {names} vs shape {var[...].shape}"
        sharding.logical_to_mesh_spec(tuple(names))  # every name has a rule
