"""Audio-driven particle deformer (paper Eq. 1-3).

Per frame t and particle m, a query ``e_m + Proj_Q(D_t)`` attends over keys/values
``Proj_K/V([Q || Q0])`` (avatar tokens pooled per particle, and template tokens); ``MLP_xi`` maps the
result to a twist ``dxi_{m,t}`` which is integrated with ``T_{m,t} = exp(dxi_{m,t}) T_{m,t-1}``
(``lax.scan`` in :func:`avatar_jax.geometry.se3.integrate`).

Twists act in each particle's local frame (pivot at its rest position), so a small rotation of a
finger particle turns the finger about itself rather than swinging it around the world origin.
The last layer of ``MLP_xi`` starts at zero: a fresh model outputs identity motion (rest pose).

Closed loop: open-loop integration never sees where a particle is, so small per-frame biases add
up to a drift. Here the twist at frame t also sees the particle's current state, the log of its
local transform ``s_{m,t-1} = log T_{m,t-1}`` (zero at rest), inside the ``lax.scan``:

    dxi_{m,t} = bound(MLP_xi(H_t[m] + Proj_s(tanh(s_{m,t-1} / scale)))) - rho_{m,t} * s_{m,t-1}

``rho_{m,t} = rho_max * sigmoid(b_m + w . H_t[m])`` is a learned pull towards rest (per particle,
modulated by the driving token, so silence can pull harder than speech). ``tbptt > 0`` stops the
gradient through the state every ``tbptt`` frames (truncated backprop through time).

Why the pull starts strong (``pull_init=0.9`` of ``pull_max=1``): with rho near 1 the state follows
``s_t ~ MLP_xi(...) + (1 - rho) s_{t-1}``, i.e. each twist is a step to a pose the audio predicts, which
plain regression learns and which cannot drift. With a weak pull (0.05) MLP_xi must output the pose's
frame-to-frame derivative and its errors integrate: on the demo's rig that model had not learned the
lip gap after 300 steps (held-out correlation -0.16 at 100 steps, against +0.25 with the strong pull;
+0.61 at 200 steps). The learned pull can still fall where smoother motion fits the teacher better.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avatar_jax.geometry import se3
from avatar_jax.model.layers import MLP, CrossAttention, fourier_dim, fourier_features, linear

NUM_PARTS = 3


class ParticleDeformer(nnx.Module):
    def __init__(self, d: int, num_heads: int, num_particles: int, rngs: nnx.Rngs, *, num_bands: int = 6,
                 max_twist: float = 0.5, twist_scale: float = 0.1, use_implicit_motion_tokens: bool = True,
                 closed_loop: bool = True, pull_max: float = 1.0, pull_init: float = 0.9,
                 state_scale: tuple[float, float] = (0.1, 0.01), tbptt: int = 0, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.num_particles = num_particles
        self.num_bands = num_bands
        self.max_twist = max_twist
        # The output scale keeps an optimiser's first steps (Adam moves every weight by ~lr) small; in the
        # open loop a per-frame bias integrates to a drift, so that path needs a smaller one (0.01).
        self.twist_scale = twist_scale
        self.use_implicit_motion_tokens = use_implicit_motion_tokens
        if use_implicit_motion_tokens:
            # The implicit motion tokens: one learned embedding per particle.
            init = 0.02 * jax.random.normal(rngs.params(), (num_particles, d), param_dtype)
            self.motion_tokens = nnx.Param(init, out_sharding=("particles", "embed"))
        else:
            # Ablation: particles are told apart only by their rest position and part.
            self.rest_proj = linear(fourier_dim(3, num_bands) + NUM_PARTS, d, ("kv", "embed"), rngs, dtype=dtype,
                                    param_dtype=param_dtype)
        self.proj_q = linear(d, d, ("embed", "mlp"), rngs, dtype=dtype, param_dtype=param_dtype)
        self.attn = CrossAttention(d, num_heads, rngs, dtype=dtype, param_dtype=param_dtype)
        self.norm = nnx.LayerNorm(d, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                                  scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("embed",)),
                                  bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",)))
        self.mlp_xi = MLP(d, 2 * d, 6, rngs, zero_init_out=True, dtype=dtype, param_dtype=param_dtype)
        self.closed_loop = closed_loop
        self.tbptt = int(tbptt)
        self.pull_max = pull_max
        # Typical poses are ~0.1 rad and ~1 cm: dividing by these makes the state features O(1).
        self.state_scale = (float(state_scale[0]),) * 3 + (float(state_scale[1]),) * 3  # static, not a leaf
        if closed_loop:
            self.state_proj = linear(6, d, (None, "embed"), rngs, dtype=dtype, param_dtype=param_dtype)
            logit = float(np.log(pull_init / (pull_max - pull_init)))
            self.pull_bias = nnx.Param(jnp.full((num_particles,), logit, param_dtype), out_sharding=("particles",))
            self.pull_gate = linear(d, 1, ("embed", None), rngs, zero_init=True, dtype=dtype, param_dtype=param_dtype)

    def particle_queries(self, particle_rest: jax.Array, particle_part: jax.Array) -> jax.Array:
        """``(M, d)`` audio-independent part of each particle's query."""
        if self.use_implicit_motion_tokens:
            return self.motion_tokens[...]
        feats = jnp.concatenate([fourier_features(particle_rest, self.num_bands),
                                 jax.nn.one_hot(particle_part, NUM_PARTS)], axis=-1)
        return self.rest_proj(feats)

    def context(self, driving: jax.Array, tokens: jax.Array, particle_rest: jax.Array, particle_part: jax.Array
                ) -> jax.Array:
        """Eq. 1-2: ``driving (T,d)``, ``tokens (L,d)`` = [Q || Q0] -> normalised ``H^mot (T, M, d)``."""
        if particle_rest.shape[0] != self.num_particles:
            raise ValueError(f"the deformer was built for {self.num_particles} particles, "
                             f"the avatar has {particle_rest.shape[0]}")
        base = self.particle_queries(particle_rest, particle_part)  # (M, d)
        queries = base[None] + self.proj_q(driving)[:, None]  # (T, M, d)
        k = self.attn.split_heads(self.attn.k(tokens))  # keys/values once per sequence
        v = self.attn.split_heads(self.attn.v(tokens))
        q = self.attn.split_heads(self.attn.q(queries))
        hidden = queries + self.attn.attend(q, k[None], v[None])
        return self.norm(hidden)

    def step_twist(self, h: jax.Array, state: jax.Array | None) -> jax.Array:
        """One frame: ``h (M,d)`` context and ``state (M,6)`` = log of the current local transform -> ``(M,6)``."""
        if state is not None:
            # tanh bounds the state's feature: whatever the weights, the state moves the MLP's input by a
            # bounded amount, so a large pose cannot feed itself (random weights at twist_scale 0.1 otherwise
            # ran away to the 0.5 m/frame bound); typical poses (~1 scale unit) stay in tanh's near-linear part.
            h = h + self.state_proj(jnp.tanh(state / jnp.asarray(self.state_scale)).astype(h.dtype))
        raw = self.twist_scale * self.mlp_xi(h).astype(jnp.float32)
        # Bounded per-frame twist: at most max_twist rad (and metres) per frame, smooth near 0.
        xi = self.max_twist * jnp.tanh(raw / self.max_twist)
        if state is None:
            return xi
        pull = self.pull_max * jax.nn.sigmoid(self.pull_bias[...] + self.pull_gate(h)[..., 0].astype(jnp.float32))
        return xi - pull[:, None] * state

    def twists(self, driving: jax.Array, tokens: jax.Array, particle_rest: jax.Array, particle_part: jax.Array
               ) -> jax.Array:
        """Open-loop twists (state taken as rest): ``(T, M, 6)`` float32."""
        return self.step_twist(self.context(driving, tokens, particle_rest, particle_part), None)

    def __call__(self, driving: jax.Array, tokens: jax.Array, particle_rest: jax.Array, particle_part: jax.Array,
                 init_transforms: jax.Array, frame_offset: jax.Array | int = 0) -> tuple[jax.Array, jax.Array]:
        """Returns particle transforms ``(T, M, 4, 4)`` (local frames, T_{-1} = init) and twists ``(T, M, 6)``.

        ``frame_offset`` is the absolute index of the first frame (only the truncation points use it, so
        that chunked streaming cuts the gradient where one pass would)."""
        h = self.context(driving, tokens, particle_rest, particle_part)  # audio part, outside the scan
        init = init_transforms.astype(jnp.float32)
        if not self.closed_loop:
            xi = self.step_twist(h, None)
            return se3.integrate(xi, init), xi
        frames = jnp.asarray(frame_offset, jnp.int32) + jnp.arange(h.shape[0], dtype=jnp.int32)

        def step(prev, inputs):
            h_t, t = inputs
            if self.tbptt > 0:  # truncated backprop: the state enters as a constant every tbptt frames
                prev = jnp.where(t % self.tbptt == 0, jax.lax.stop_gradient(prev), prev)
            xi = self.step_twist(h_t, se3.log(prev))
            current = se3.compose(se3.exp(xi), prev)
            return current, (current, xi)

        _, (transforms, xi) = jax.lax.scan(step, init, (h, frames))
        return transforms, xi


def local_to_world(transforms: jax.Array, pivots: jax.Array) -> jax.Array:
    """Conjugate particle-local transforms by their rest pivots: ``G T G^-1`` with ``G = translate(p)``.

    ``transforms (..., M, 4, 4)``, ``pivots (M, 3)`` -> world-space motion ``(..., M, 4, 4)`` that maps
    rest-pose points to posed points.
    """
    rot, trans = transforms[..., :3, :3], transforms[..., :3, 3]
    new_trans = trans + pivots - (rot @ pivots[..., :, None])[..., 0]
    return se3.from_rotation_translation(rot, new_trans)
