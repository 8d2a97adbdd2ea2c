"""Noise schedules of the two teacher kinds, and conversions of their predictions to epsilon-hat.

Both write a noisy sample as ``x_tau = alpha(tau) x0 + sigma(tau) eps`` (the form of Eq. 9), ``tau`` in [0, 1]:

- flow matching (Wan2.1, rectified flow): ``alpha = 1 - tau``, ``sigma = tau``, the network predicts the
  velocity ``v = eps - x0`` and is called with ``timestep = 1000 tau``. Since ``x_tau = x0 + tau v``:
  ``x0_hat = x_tau - tau v_hat`` and ``eps_hat = x0_hat + v_hat = x_tau + (1 - tau) v_hat``.
- epsilon (DDPM, variance preserving, discrete betas): ``alpha = sqrt(abar)``, ``sigma = sqrt(1 - abar)``,
  the network predicts ``eps`` directly, called with the discrete step ``timestep = tau (N - 1)``;
  ``x0_hat = (x_tau - sigma eps_hat) / alpha``.

Score distillation (Eq. 9) needs ``eps_hat(x_tau, tau, c)``: :func:`to_epsilon` gives it from either kind.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from avatar_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class FlowMatching:
    """Rectified flow: ``x = (1 - tau) x0 + tau eps``; the network predicts ``v = eps - x0``."""

    num_train_timesteps: int = 1000
    prediction: str = "velocity"

    def alpha(self, tau: jax.Array) -> jax.Array:
        return 1.0 - tau

    def sigma(self, tau: jax.Array) -> jax.Array:
        return tau

    def timestep(self, tau: jax.Array) -> jax.Array:
        return tau * self.num_train_timesteps


@dataclasses.dataclass(frozen=True)
class VariancePreserving:
    """DDPM with linear betas in ``[beta_start, beta_end]`` over ``num_train_timesteps`` steps (continuous
    ``tau`` interpolates the discrete ``log abar``); the network predicts ``eps``."""

    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    prediction: str = "epsilon"

    def _log_abar(self, tau: jax.Array) -> jax.Array:
        betas = jnp.linspace(self.beta_start, self.beta_end, self.num_train_timesteps, dtype=jnp.float32)
        log_abar = jnp.cumsum(jnp.log1p(-betas))
        pos = jnp.asarray(tau, jnp.float32) * (self.num_train_timesteps - 1)
        return jnp.interp(pos, jnp.arange(self.num_train_timesteps, dtype=jnp.float32), log_abar)

    def alpha(self, tau: jax.Array) -> jax.Array:
        return jnp.exp(0.5 * self._log_abar(tau))

    def sigma(self, tau: jax.Array) -> jax.Array:
        return jnp.sqrt(-jnp.expm1(self._log_abar(tau)))

    def timestep(self, tau: jax.Array) -> jax.Array:
        return tau * (self.num_train_timesteps - 1)


Schedule = FlowMatching | VariancePreserving


def _b(a: jax.Array, like: jax.Array) -> jax.Array:
    """Broadcast a per-sample ``(B,)`` (or scalar) value against ``like (B, ...)``."""
    a = jnp.asarray(a, jnp.float32)
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))


def add_noise(schedule: Schedule, x0: jax.Array, eps: jax.Array, tau: jax.Array) -> jax.Array:
    """``x_tau = alpha(tau) x0 + sigma(tau) eps``."""
    return _b(schedule.alpha(tau), x0) * x0 + _b(schedule.sigma(tau), x0) * eps


def to_epsilon(schedule: Schedule, prediction: jax.Array, x_t: jax.Array, tau: jax.Array) -> jax.Array:
    """The network's raw output -> ``eps_hat``."""
    if schedule.prediction == "epsilon":
        return prediction
    if schedule.prediction == "velocity":
        return x_t + _b(1.0 - tau, x_t) * prediction
    raise ConfigError(f"unknown prediction type {schedule.prediction!r}")


def to_x0(schedule: Schedule, prediction: jax.Array, x_t: jax.Array, tau: jax.Array) -> jax.Array:
    """The network's raw output -> ``x0_hat``."""
    if schedule.prediction == "velocity":
        return x_t - _b(tau, x_t) * prediction
    eps = to_epsilon(schedule, prediction, x_t, tau)
    return (x_t - _b(schedule.sigma(tau), x_t) * eps) / _b(schedule.alpha(tau), x_t)


def shift_sigmas(sigmas: jax.Array, shift: float) -> jax.Array:
    """Wan's timestep shift ``s' = shift s / (1 + (shift - 1) s)`` (more steps at high noise)."""
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)
