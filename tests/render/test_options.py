"""Per-camera Gaussian batches, antialiasing, normalised depth, tight tiles and sort keys at scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.geometry import orbit
from avatar_jax.render import binning, intersection_count, render
from avatar_jax.render.footprint import cutoff, min_q_over_tile
from avatar_jax.render.reference import render_reference
from avatar_jax.render.scenes import front_camera, random_scene

BG = (0.2, 0.1, 0.3)


def assert_close(out, ref, atol=1e-5):
    for name, a, b in zip(("rgb", "alpha", "depth"), out[:3], ref[:3], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=1e-5, err_msg=name)


def frames(n: int, count: int) -> dict:
    """``count`` different scenes of ``n`` Gaussians stacked on a leading frame axis."""
    scenes = [random_scene(np.random.default_rng(10 + t), n) for t in range(count)]
    return {k: np.stack([s[k] for s in scenes]) for k in scenes[0]}


@pytest.mark.parametrize("backend", ["xla", "pallas"])
def test_per_camera_gaussians_equal_separate_renders(backend):
    """(B,N,...) Gaussians with B cameras: one call equals B calls, forward and gradient."""
    b, n = 2, (20 if backend == "xla" else 8)
    seq = frames(n, b)
    cams = orbit(b, radius=4.0, width=24, height=16, elevation_deg=5.0)
    kw = dict(backend=backend, pallas_platform="gpu", chunk=8, background=BG)
    weights = jnp.asarray(np.random.default_rng(3).normal(size=(b, 16, 24, 3)))

    def loss_batched(means, colors):
        return jnp.sum(render(means, seq["quats"], seq["scales"], seq["opacities"], colors, cams, **kw).rgb * weights)

    def loss_one(t, means, colors):
        out = render(means, seq["quats"][t], seq["scales"][t], seq["opacities"][t], colors, cams[t], **kw)
        return jnp.sum(out.rgb * weights[t])

    batched = render(**seq, camera=cams, **kw)
    assert batched.rgb.shape == (b, 16, 24, 3) and batched.n_intersections.shape == (b,)
    ref = render_reference(**seq, camera=cams, background=BG)
    assert_close(batched, ref)
    for t in range(b):
        assert_close([x[t] for x in batched[:3]], render(**{k: v[t] for k, v in seq.items()}, camera=cams[t], **kw),
                     atol=1e-6)
    g_means, g_colors = jax.grad(loss_batched, argnums=(0, 1))(seq["means"], seq["colors"])
    for t in range(b):
        gm, gc = jax.grad(loss_one, argnums=(1, 2))(t, seq["means"][t], seq["colors"][t])
        assert np.abs(gm).max() > 0
        np.testing.assert_allclose(g_means[t], gm, rtol=1e-4, atol=1e-5 * np.abs(gm).max())
        np.testing.assert_allclose(g_colors[t], gc, rtol=1e-4, atol=1e-6)


def test_per_camera_gaussians_need_one_set_per_camera(rng):
    seq = frames(5, 2)
    from avatar_jax.errors import InputError

    with pytest.raises(InputError, match="one set per camera"):
        render(**seq, camera=orbit(3, radius=4.0, width=16, height=16))
    with pytest.raises(InputError, match="one set per camera"):
        render(**seq, camera=front_camera(16, 16))


@pytest.mark.parametrize("backend", ["xla", "pallas"])
def test_antialiased_and_normalized_depth_match_reference(rng, backend):
    scene = random_scene(rng, 40 if backend == "xla" else 16)
    cam = front_camera(32, 24)
    opts = dict(antialiased=True, normalize_depth=True)
    ref = render_reference(**scene, camera=cam, background=BG, **opts)
    plain = render_reference(**scene, camera=cam, background=BG)
    assert np.abs(ref.alpha - plain.alpha).max() > 1e-2  # the compensation really changes the image
    out = render(**scene, camera=cam, background=BG, backend=backend, pallas_platform="tpu", chunk=8, **opts)
    assert_close(out, ref)
    covered = ref.alpha > 0.05
    np.testing.assert_allclose(np.asarray(out.depth)[covered] * np.asarray(out.alpha)[covered],
                               render_reference(**scene, camera=cam, antialiased=True).depth[covered], rtol=1e-4)
    assert np.all(np.asarray(out.depth)[ref.alpha == 0] == 0)


def test_tight_tiles_drop_tiles_the_gaussian_cannot_reach():
    """A thin diagonal Gaussian: its 3-sigma box spans many tiles, the exact test keeps only the diagonal."""
    cam = front_camera(128, 128)
    c, s = np.cos(np.pi / 8), np.sin(np.pi / 8)  # 45 degrees about z
    scene = dict(means=np.zeros((1, 3), np.float32), quats=np.array([[c, 0, 0, s]], np.float32),
                 scales=np.array([[0.3, 0.02, 0.02]], np.float32), opacities=np.array([0.9], np.float32),
                 colors=np.ones((1, 3), np.float32))
    tiles = intersection_count(**{k: scene[k] for k in ("means", "quats", "scales", "opacities")}, camera=cam,
                               backend="pallas")
    out = render(**scene, camera=cam, backend="pallas", pallas_platform="tpu", chunk=8)
    assert_close(out, render_reference(**scene, camera=cam))
    assert int(out.n_intersections) == tiles
    assert tiles < 0.6 * 64  # per-axis bounds alone keep most of the 8x8 box; the exact test does the rest
    # The exact test against brute force over a tile's pixel centres.
    r = np.random.default_rng(1)
    means = r.uniform(-8, 40, size=(200, 2))
    a, cc = r.uniform(0.01, 1.0, size=(2, 200))
    b = r.uniform(-1, 1, 200) * np.sqrt(a * cc) * 0.95
    conics = np.stack([a, b, cc], -1)
    got = np.asarray(min_q_over_tile(jnp.asarray(means), jnp.asarray(conics), jnp.ones(200), jnp.ones(200), 16))
    def brute(px):  # min of q over a grid of points of the tile's pixel-centre rectangle [16.5, 31.5]^2
        dx = px[None, None, :] - means[:, 0, None, None]
        dy = px[None, :, None] - means[:, 1, None, None]
        return (a[:, None, None] * dx**2 + 2 * b[:, None, None] * dx * dy + cc[:, None, None] * dy**2).min(axis=(1, 2))

    tol = 1e-5 * (1 + np.abs(got))
    assert np.all(got <= brute(np.arange(16, 32) + 0.5) + tol)  # never above any pixel centre: no pixel lost
    np.testing.assert_allclose(got, brute(np.linspace(16.5, 31.5, 301)), rtol=1e-3, atol=1e-2)  # and tight
    assert float(cutoff(jnp.array([1 / 255 - 1e-4]))[0]) < 0  # too faint to reach any pixel


def test_sort_keys_cover_eight_cameras_of_four_million_gaussians_at_1080p():
    """Key arithmetic at full size (8 x 4M x 1920x1080) on a sample of extreme slots; no full render needed."""
    n = 4_000_000
    for tile in (8, 16):  # XLA bins and Pallas tiles
        grid = binning.TileGrid(1920, 1080, 8, tile)
        binning.check_sizes(n, grid)  # no InputError
        assert binning.packed_depth_bits(n, grid.num_tiles) is None  # needs the two-key sort
        r = np.random.default_rng(tile)
        tiles = np.concatenate([[0, grid.num_tiles - 1, grid.num_tiles, grid.num_tiles - 1, 0],
                                r.integers(0, grid.num_tiles + 1, 500)]).astype(np.int32)
        ranks = np.concatenate([[n - 1, 0, 0, n - 1, 0], r.integers(0, n, 500)]).astype(np.int32)
        s_tile, s_rank = binning.sort_slots(jnp.asarray(tiles), jnp.asarray(ranks), n, grid.num_tiles)
        order = np.lexsort((ranks, tiles))
        np.testing.assert_array_equal(s_tile, tiles[order])
        np.testing.assert_array_equal(s_rank, ranks[order])
        # Instance ids of the last camera's farthest Gaussian still fit int32.
        assert (grid.cameras - 1) * n + (n - 1) < 2**31 - 1
    # Small sizes take the packed single-key sort, with the same order.
    tiles, ranks = np.array([3, 1, 3, 0, 1], np.int32), np.array([2, 7, 0, 5, 1], np.int32)
    assert binning.packed_depth_bits(8, 4) is not None
    packed = binning.sort_slots(jnp.asarray(tiles), jnp.asarray(ranks), 8, 4)
    two_key = binning.sort_slots(jnp.asarray(tiles), jnp.asarray(ranks), 4_000_000, 259_200)
    for x, y in zip(packed, two_key, strict=True):
        np.testing.assert_array_equal(x, y)
