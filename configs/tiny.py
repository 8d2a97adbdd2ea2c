"""CPU default: small enough for a 2-core laptop, used by `make demo` and the tests.

Usage: --config configs/tiny.py   (or --config tiny)
"""

from avatar_jax.configs._defaults import defaults


def get_config(arg=None):
    del arg
    return defaults()
