"""The test harness itself: compiled code is released between test files (tests/conftest.py)."""

import gc

import jax
import jax.numpy as jnp


def _mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def test_clearing_the_caches_unmaps_compiled_code():
    # What the conftest's module fixture relies on: XLA:CPU code lives in memory mappings that go away
    # with the executables once JAX's caches let go of them. If this stops holding (a JAX upgrade), a CI
    # worker runs into vm.max_map_count again.
    x = jnp.ones((16, 16))  # the CPU client and its thread pools exist before the count starts
    jax.jit(lambda a: a + 1)(x).block_until_ready()
    jax.clear_caches()
    gc.collect()
    before = _mappings()
    for i in range(10):  # distinct programs of ~30 kernels each, each its own executable

        def program(a, i=i):
            for j in range(30):
                a = jnp.sort(jnp.tanh(a @ a.T * (i + j + 1)), axis=j % 2)
            return a

        jax.jit(program)(x).block_until_ready()
    grown = _mappings() - before
    assert grown >= 50, grown  # each executable maps its kernels' code and data (~10 here)
    jax.clear_caches()
    gc.collect()
    assert _mappings() - before < 0.2 * grown, (before, grown, _mappings())
