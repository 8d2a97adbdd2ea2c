"""Test harness: 8 simulated CPU devices (set before jax is imported), fixed seeds."""

import os

# Must happen before jax initialises its backends, hence at import time of conftest.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the whole run, inherited by the subprocess tests (resume,
# multi-host, bundles): the same train step or renderer compiled by several tests or processes is
# compiled once. Most of this suite's time is XLA compilation on 2 cores.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax-compilation-cache"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))  # bounded, and file-locked across workers

import gc  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Free every compiled executable after each test file.

    XLA:CPU maps each compiled kernel's code and data as separate memory mappings (about three per
    kernel), and an executable lives as long as JAX's caches hold it. A CI worker that runs ~70 test
    files in one process reached Linux's per-process limit (vm.max_map_count, 65530) near the end of the
    suite, and the next compile died in XLA with a segfault or abort. The largest file reaches ~19k;
    clearing the caches takes a worker back to ~600. Later files recompile what they share with earlier
    ones, mostly from the persistent cache above.
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def rng():
    """A numpy Generator with a fixed seed (fresh for every test)."""
    return np.random.default_rng(0)


@pytest.fixture
def key():
    """A JAX PRNG key with a fixed seed."""
    return jax.random.key(0)
