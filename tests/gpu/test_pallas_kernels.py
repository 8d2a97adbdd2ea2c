"""The Pallas GPU kernels (Triton), compiled on a real CUDA GPU, against the numpy reference and the XLA path.

CI has no GPU, so these run only where JAX's default backend is a GPU (``scripts/device_check.sh`` runs
them there); the same kernels run in interpret mode on every CPU run (``tests/kernels``). Scenes are drawn
fresh for every seed, so a kernel that indexes wrongly cannot pass by luck of one input.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.geometry import Camera, orbit
from avatar_jax.render import intersection_count, render
from avatar_jax.render.reference import render_reference
from avatar_jax.render.scenes import crowded_tile_scene, front_camera, person_scene, random_scene

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu",
                                reason="needs a CUDA GPU: compiles the Pallas Triton kernels (interpret-mode "
                                       "coverage of the same kernels is in tests/kernels)")

BG = (0.2, 0.1, 0.3)


def max_diffs(out, ref) -> dict:
    return {name: float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
            for name, a, b in zip(("rgb", "alpha", "depth"), out[:3], ref[:3], strict=True)}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk", [None, 8])  # None: the GPU default (64 Gaussians per block)
def test_compiled_forward_matches_reference(seed, chunk):
    rng = np.random.default_rng(100 + seed)
    scene = random_scene(rng, 200, sh_degree=1)
    cam = front_camera(72, 40)  # not a multiple of the 16-pixel tile
    ref = render_reference(**scene, camera=cam, background=BG)
    out = render(**scene, camera=cam, background=BG, backend="pallas", chunk=chunk)
    xla = render(**scene, camera=cam, background=BG, backend="xla")
    d_ref, d_xla = max_diffs(out, ref), max_diffs(out, xla)
    print(f"seed {seed} chunk {chunk}: vs reference {d_ref}, vs xla {d_xla}")
    assert ref.alpha.max() > 0.5 and ref.alpha.min() < 0.9  # neither empty nor saturated everywhere
    assert all(np.isfinite(v) and v < 1e-5 for v in d_ref.values()), d_ref
    assert all(v < 2e-6 for v in d_xla.values()), d_xla


@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_backward_matches_xla(seed):
    rng = np.random.default_rng(200 + seed)
    scene = random_scene(rng, 120)
    cam = front_camera(48, 32)
    h, w = cam.height, cam.width
    wr, wa, wd = (jnp.asarray(rng.normal(size=s)) for s in ((h, w, 3), (h, w), (h, w)))

    def loss(backend, means, quats, scales, opacities, colors, viewmat):
        out = render(means, quats, scales, opacities, colors, Camera(viewmat, cam.K, w, h), background=BG,
                     backend=backend, capacity=8192)
        return jnp.sum(out.rgb * wr) + jnp.sum(out.alpha * wa) + jnp.sum(out.depth * wd)

    args = (*scene.values(), cam.viewmat)
    g_pallas = jax.jit(jax.grad(lambda *a: loss("pallas", *a), argnums=range(6)))(*args)
    g_xla = jax.jit(jax.grad(lambda *a: loss("xla", *a), argnums=range(6)))(*args)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors", "viewmat"), g_pallas, g_xla,
                          strict=True):
        a, b = np.asarray(a), np.asarray(b)
        rel = float(np.abs(a - b).max() / np.abs(b).max())
        print(f"seed {seed} d{name}: max |pallas - xla| / max |xla| = {rel:.2e}")
        assert np.abs(b).max() > 0 and np.isfinite(a).all(), name
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max(), err_msg=name)


def test_crowded_tile_loops_over_many_blocks():
    """1,500 Gaussians in one tile with 8-Gaussian blocks: ~190 blocks in one program, both directions."""
    rng = np.random.default_rng(3)
    cam = front_camera(16, 16)
    scene = crowded_tile_scene(rng, 1500, cam, scale=0.01, opacity=0.03)
    ref = render_reference(**scene, camera=cam)

    def pallas(c):
        return render(**dict(scene, colors=c), camera=cam, backend="pallas", chunk=8, capacity=2048)

    d = max_diffs(pallas(scene["colors"]), ref)
    print(f"crowded tile: vs reference {d}")
    assert all(v < 1e-5 for v in d.values()), d
    g_pallas = jax.grad(lambda c: jnp.sum(pallas(c).rgb))(scene["colors"])
    g_xla = jax.grad(lambda c: jnp.sum(render(**dict(scene, colors=c), camera=cam, backend="xla",
                                              capacity=2048).rgb))(scene["colors"])
    np.testing.assert_allclose(g_pallas, g_xla, rtol=1e-4, atol=1e-6)


def test_batched_cameras_and_a_20k_person_at_256():
    """The shapes the product renders: 3 orbit cameras, then 20k person-shaped Gaussians at 256x256."""
    rng = np.random.default_rng(4)
    scene = random_scene(rng, 300, sh_degree=2)
    cams = orbit(3, radius=4.0, width=40, height=32, elevation_deg=10.0)
    d = max_diffs(render(**scene, camera=cams, background=BG, backend="pallas"),
                  render_reference(**scene, camera=cams, background=BG))
    print(f"3 cameras: vs reference {d}")
    assert all(v < 1e-5 for v in d.values()), d

    person = {k: jnp.asarray(v) for k, v in person_scene(rng, 20_000).items()}
    cam = orbit(1, radius=3.0, width=256, height=256, fov_y_deg=40.0, elevation_deg=5.0)[0]
    args = [person[k] for k in ("means", "quats", "scales", "opacities", "colors")]
    hits = {b: int(intersection_count(*args[:3], cam, args[3], backend=b)) for b in ("pallas", "xla")}
    out = render(*args, cam, backend="pallas", capacity=hits["pallas"] + 1024)
    xla = render(*args, cam, backend="xla", capacity=hits["xla"] + 1024)
    d = max_diffs(out, xla)
    print(f"20k person at 256x256: intersections {hits}, pallas vs xla {d}")
    assert not bool(out.overflow) and float(out.alpha.max()) > 0.9
    assert all(v < 1e-5 for v in d.values()), d
