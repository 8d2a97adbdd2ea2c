"""Test harness: 8 simulated CPU devices (set before jax is imported), fixed seeds."""

import os

# Must happen before jax initialises its backends, hence at import time of conftest.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    """A numpy Generator with a fixed seed (fresh for every test)."""
    return np.random.default_rng(0)


@pytest.fixture
def key():
    """A JAX PRNG key with a fixed seed."""
    return jax.random.key(0)
