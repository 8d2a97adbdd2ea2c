"""The inference-only render path (forward_only, capacity levels) against the reference, and the binning's
culling against brute force: no Gaussian that reaches alpha >= 1/255 at a pixel is ever dropped from its bin."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from avatar_jax.kernels import splat_xla
from avatar_jax.kernels.splat_common import ALPHA_MIN, CA, CB, CC, MX, MY, OP

from avatar_jax.errors import InputError
from avatar_jax.render import binning, intersection_count, render, renderer
from avatar_jax.render.reference import render_reference
from avatar_jax.render.renderer import capacity_ladder, project_instances
from avatar_jax.render.scenes import front_camera, person_scene, random_scene

BG = (0.2, 0.1, 0.3)
CAM = front_camera(48, 40)


def occluded_scene(rng):
    """An opaque wall of Gaussians in front (its pixels terminate) with the hard random scene behind it."""
    wall = 400
    xy = rng.uniform(-0.3, 0.3, size=(wall, 2))
    scene = random_scene(rng, 60)
    front = dict(means=np.concatenate([xy, np.full((wall, 1), -1.5)], 1), quats=rng.normal(size=(wall, 4)),
                 scales=np.full((wall, 3), 0.08), opacities=rng.uniform(0.9, 0.99, wall),
                 colors=rng.uniform(size=(wall, 3)))
    return {k: np.concatenate([front[k], scene[k]]).astype(np.float32) for k in scene}


@pytest.fixture(scope="module")
def scene():
    return occluded_scene(np.random.default_rng(3))


def test_forward_only_with_capacity_levels_matches_reference(scene, monkeypatch):
    ref = render_reference(**scene, camera=CAM, background=BG)
    assert ref.alpha.max() > 0.999 and ref.alpha.min() < 0.5  # terminated pixels (T < 1e-3) and open ones
    exact = intersection_count(scene["means"], scene["quats"], scene["scales"], CAM, scene["opacities"],
                               backend="xla")
    monkeypatch.setattr(renderer, "MIN_LEVEL_SLOTS", 1)  # let the small scene have every level
    ladder = capacity_ladder(2 * exact, 4, 16)  # 2 * exact / 2^(k/3), k = 3..0
    assert len(ladder) == 4 and ladder[-1] == 2 * exact and exact <= ladder[0] < exact + 16

    def go(s, capacity, levels):
        return render(**s, camera=CAM, background=jnp.array(BG), backend="xla", capacity=capacity,
                      capacity_levels=levels, forward_only=True)

    out = jax.jit(go, static_argnums=(1, 2))(scene, 2 * exact, 4)  # the lowest level (exact) runs
    for name, a, b in zip(("rgb", "alpha", "depth"), out[:3], ref[:3], strict=True):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-5, rtol=1e-5, err_msg=name)
    assert int(out.n_intersections) == exact and not bool(out.overflow)
    # Too small even at its largest level: still flagged and poisoned, never a wrong image.
    small = jax.jit(go, static_argnums=(1, 2))(scene, exact - 1, 2)
    assert bool(small.overflow) and np.isnan(np.asarray(small.rgb)).all()
    with pytest.raises(InputError, match="forward_only=True renders cannot be differentiated"):
        jax.grad(lambda m: go(dict(scene, means=m), exact, 1).rgb.sum())(jnp.asarray(scene["means"]))


def test_forward_visible_skips_hidden_chunks_and_equals_forward(scene):
    """Same tiles' colour, depth and transmittance as the full forward, from fewer chunks."""
    grid = binning.TileGrid(CAM.width, CAM.height, 1, 8)
    feats, radii, depths = project_instances(*(jnp.asarray(scene[k]) for k in ("means", "quats", "scales",
                                                                               "opacities", "colors")),
                                             CAM.viewmat[None], CAM.K[None], CAM.width, CAM.height)
    layout = binning.bin_and_sort(feats[:, MX:MY + 1], radii, feats[:, CA:CC + 1], feats[:, OP], depths, grid,
                                  capacity=8192, chunk=4)
    slots = jnp.where(layout.slot_valid[..., None], feats[layout.slot_gid], 0.0)
    kw = dict(tiles_x=grid.tiles_x, tiles_per_camera=grid.tiles_per_camera, tile_size=grid.tile)
    full = splat_xla.forward(slots, layout.chunk_tile, layout.chunk_k <= 0, layout.n_chunks,
                             num_tiles=grid.num_tiles, batch=64, **kw)
    for batch in (8, 64):  # several chunks of one tile in a step, and one step for many tiles
        *visible, evaluated = splat_xla.forward_visible(slots, layout.chunk_tile, layout.chunk_k,
                                                        num_tiles=grid.num_tiles, batch=batch, **kw)
        for a, b in zip(visible, full[:3], strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6)
        assert 0 < int(evaluated) < 0.9 * int(layout.n_chunks)  # behind the wall, chunks were skipped


def test_binning_never_drops_a_contributing_gaussian():
    """Every (Gaussian, pixel) pair that DESIGN.md composites (alpha = o exp(-q/2) >= 1/255 and the pixel's
    16-px tile overlapping the 3-sigma box; brute force, float64) has the Gaussian in the pixel's 8-px bin;
    and the bins hold few Gaussians that reach none of their pixels."""
    scene = person_scene(np.random.default_rng(0), 400)
    cam = front_camera(64, 64, distance=2.2)
    grid = binning.TileGrid(64, 64, 1, 8)
    feats, radii, depths = project_instances(*(jnp.asarray(scene[k]) for k in ("means", "quats", "scales",
                                                                               "opacities", "colors")),
                                             cam.viewmat[None], cam.K[None], 64, 64)
    layout = binning.bin_and_sort(feats[:, MX:MY + 1], radii, feats[:, CA:CC + 1], feats[:, OP], depths, grid,
                                  capacity=16384, chunk=8)
    assert not bool(layout.camera_overflow[0])
    f = np.asarray(feats, np.float64)
    jj, ii = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5)
    dx, dy = jj[None] - f[:, MX, None, None], ii[None] - f[:, MY, None, None]
    q = f[:, CA, None, None] * dx * dx + 2 * f[:, CB, None, None] * dx * dy + f[:, CC, None, None] * dy * dy
    r = np.asarray(radii, np.float64)[:, None, None]
    tx, ty = (jj // 16)[None], (ii // 16)[None]
    touch = ((16 * tx < f[:, MX, None, None] + r) & (f[:, MX, None, None] - r < 16 * (tx + 1))
             & (16 * ty < f[:, MY, None, None] + r) & (f[:, MY, None, None] - r < 16 * (ty + 1)))
    reaches = (f[:, OP, None, None] * np.exp(-0.5 * q) >= ALPHA_MIN) & touch & (r > 0)
    bin_of_pixel = (np.arange(64)[:, None] // 8) * grid.tiles_x + np.arange(64)[None, :] // 8
    needed = {(int(b), int(g)) for g, i, j in zip(*np.nonzero(reaches), strict=True) for b in [bin_of_pixel[i, j]]}
    valid = np.asarray(layout.slot_valid)
    held = {(int(t), int(g)) for t, gs, vs in zip(np.asarray(layout.chunk_tile), np.asarray(layout.slot_gid), valid,
                                                  strict=True) for g, v in zip(gs, vs, strict=True) if v}
    assert len(needed) > 500 and needed <= held  # nothing that contributes is culled ...
    assert len(held - needed) < 0.05 * len(held)  # ... and little that cannot contribute is kept

