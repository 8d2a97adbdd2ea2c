"""The renderer's geometry asks for full float32 matrix products (GPUs default to TF32 for float32 dots:
on an H200 that moved pixels by ~2e-3 against the float64 reference; tests/gpu checks the pixels there)."""

import re

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.render.projection import project
from avatar_jax.render.scenes import front_camera, random_scene
from avatar_jax.render.sh import eval_colors


def dot_precisions(fn, *args) -> list[str]:
    text = jax.jit(fn).lower(*args).as_text()
    dots = re.findall(r"stablehlo\.dot_general.*", text)
    assert dots, "expected matrix products in the lowered geometry"
    return dots


def test_projection_and_sh_colours_lower_every_dot_at_highest_precision():
    scene = random_scene(np.random.default_rng(0), 10, sh_degree=2)
    cam = front_camera(32, 32)
    args = [jnp.asarray(scene[k]) for k in ("means", "quats", "scales", "opacities")]
    dots = dot_precisions(lambda m, q, s, o: project(m, q, s, o, cam.viewmat, cam.K, 32, 32), *args)
    dots += dot_precisions(lambda c, m: eval_colors(c, m, jnp.zeros(3)), jnp.asarray(scene["colors"]), args[0])
    assert all("HIGHEST" in d for d in dots), [d[:160] for d in dots if "HIGHEST" not in d]
