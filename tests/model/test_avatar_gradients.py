"""A gradient step through deformer -> skinning -> head -> renderer reaches every trainable part."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from avatar_jax.config import load_config
from avatar_jax.geometry import camera as cam_lib
from avatar_jax.model.avatar import AudioDrivenAvatar, forward
from avatar_jax.model.canonical import synthetic_avatar
from avatar_jax.render import render

SWITCHES = [None, "particle_deformer", "implicit_motion_tokens", "weight_decoder", "face_offsets",
            "hand_offsets", "body_offsets", "gaussian_head", "body_skinning"]


def groups(state):
    """Parameter groups: one per sub-module two levels down (e.g. deformer/mlp_xi, head/face)."""
    flat = nnx.to_flat_state(state)
    out = {}
    for path, var in flat:
        name = "/".join(str(p) for p in path[:2])
        out.setdefault(name, []).append(np.asarray(var[...] if hasattr(var, "__getitem__") else var))
    return out


def image_loss(frames, cam, target):
    """L1 between the renders of every frame and ``target (T,H,W,3)``."""
    images = [render(**frames.frame(t), camera=cam, background=(1.0, 1.0, 1.0), backend="xla").rgb
              for t in range(target.shape[0])]
    return jnp.mean(jnp.abs(jnp.stack(images) - target))


# One compiled render loss for every switch (same shapes); the model part is compiled per switch.
_image_loss_and_grad = jax.jit(jax.value_and_grad(image_loss))


def _grad_fn(graphdef, avatar, driving, cam, target):
    """value_and_grad of the full loss by the chain rule: model VJP of the renderer's gradient."""
    model_fwd = jax.jit(lambda p: forward(graphdef, p, avatar, driving)[0])
    model_vjp = jax.jit(lambda p, ct: jax.vjp(lambda q: forward(graphdef, q, avatar, driving)[0], p)[1](ct)[0])

    def value_and_grad(params):
        frames = model_fwd(params)
        loss, frame_grads = _image_loss_and_grad(frames, cam, target)
        return loss, model_vjp(params, frame_grads)

    return value_and_grad


@pytest.mark.slow
@pytest.mark.parametrize("switch", SWITCHES)
def test_gradient_step_reaches_every_parameter_group(switch):
    c = load_config("tiny")
    with c.unlocked():
        c.model.num_particles, c.model.d_model, c.model.num_heads = 16, 16, 2
        if switch:
            c.model[f"use_{switch}"] = False
    model = AudioDrivenAvatar(c.model, nnx.Rngs(0))
    graphdef, state = nnx.split(model, nnx.Param)
    avatar = synthetic_avatar(300, 16, seed=1)
    cam = cam_lib.look_at(eye=(0.0, 0.3, -3.0), target=(0.0, 0.3, 0.0), width=32, height=32, fov_y_deg=40.0)
    driving = jax.random.normal(jax.random.key(2), (2, 16))
    target = jnp.full((2, 32, 32, 3), 0.7)

    opt = optax.adam(1e-2)
    opt_state = opt.init(state)
    grad_fn = _grad_fn(graphdef, avatar, driving, cam, target)
    # Step 1 from fresh weights: zero-initialised output layers get gradients; step 2: everything does.
    for step in range(2):
        loss, grads = grad_fn(state)
        assert np.isfinite(float(loss))
        updates, opt_state = opt.update(grads, opt_state, state)
        new_state = optax.apply_updates(state, updates)
        if step == 1:
            g = groups(grads)
            before, after = groups(state), groups(new_state)
            assert g, "no parameters"
            for name, arrays in g.items():
                assert all(np.all(np.isfinite(a)) for a in arrays), f"non-finite gradient in {name}"
                assert any(np.abs(a).max() > 0 for a in arrays), f"zero gradient for group {name} ({switch=})"
                assert any(not np.array_equal(x, y) for x, y in zip(before[name], after[name], strict=True)), \
                    f"group {name} did not change"
        state = new_state
