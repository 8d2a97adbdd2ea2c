"""Renderer memory grows with tile intersections (the static capacity), not with Gaussians x pixels."""

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.render import render
from avatar_jax.render.scenes import front_camera, person_scene


def compiled_temp_bytes(n: int, capacity: int, size: int = 128) -> int:
    cam = front_camera(size, size, distance=3.0)
    scene = person_scene(np.random.default_rng(0), n)
    args = tuple(jnp.asarray(scene[k]) for k in ("means", "quats", "scales", "opacities", "colors"))
    fn = jax.jit(lambda *a: render(*a, cam, backend="xla", capacity=capacity, check_finite=False).rgb)
    return fn.lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_xla_path_memory_follows_intersections_not_gaussians_times_pixels():
    small_n = compiled_temp_bytes(2_000, 1 << 14)
    large_n = compiled_temp_bytes(8_000, 1 << 14)
    large_cap = compiled_temp_bytes(8_000, 1 << 16)
    # 4x the Gaussians at the same intersection capacity: at most per-Gaussian growth, far below the
    # 6000 extra Gaussians x 16384 pixels x 4 bytes (393 MB) a dense splatter would need.
    assert large_n - small_n < 6_000 * 64 * 4 * 10
    # 4x the intersection capacity: the temporaries grow with it.
    assert large_cap > 1.5 * large_n
    assert large_cap < 8_000 * 128 * 128 * 4  # still below one Gaussians x pixels float buffer
