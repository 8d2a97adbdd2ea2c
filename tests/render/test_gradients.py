"""Gradients of the XLA path: against autodiff of the dense splatter and against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from avatar_jax.kernels import splat, splat_xla
from avatar_jax.kernels.splat_common import CA, CC, MX, MY, OP, T_MIN

from avatar_jax.geometry import Camera
from avatar_jax.render import binning, render
from avatar_jax.render.dense import render_dense
from avatar_jax.render.renderer import project_instances
from avatar_jax.render.scenes import front_camera, random_scene

NAMES = ("means", "quats", "scales", "opacities", "colors", "viewmat", "background")


def make_loss(fn, cam, rng, **kwargs):
    h, w = cam.height, cam.width
    wr, wa, wd = (jnp.asarray(rng.normal(size=s)) for s in ((h, w, 3), (h, w), (h, w)))

    def loss(means, quats, scales, opacities, colors, viewmat, background):
        out = fn(means, quats, scales, opacities, colors, Camera(viewmat, cam.K, w, h), background=background,
                 **kwargs)
        return jnp.sum(out.rgb * wr) + jnp.sum(out.alpha * wa) + jnp.sum(out.depth * wd)

    return loss


def scene_args(scene, cam, dtype=np.float32):
    bg = np.array([0.2, 0.1, 0.3])
    return tuple(np.asarray(a, dtype) for a in (*scene.values(), cam.viewmat, bg))


def test_xla_gradients_match_dense_autodiff(rng):
    scene = random_scene(rng, 30, sh_degree=2)
    cam = front_camera(32, 24)
    args = scene_args(scene, cam)
    dense = jax.grad(make_loss(render_dense, cam, np.random.default_rng(7), block=256), argnums=range(7))(*args)
    grads = jax.grad(make_loss(render, cam, np.random.default_rng(7), backend="xla", capacity=8192),
                     argnums=range(7))(*args)
    for name, g, d in zip(NAMES, grads, dense, strict=True):
        assert np.abs(d).max() > 0, name  # every input really receives gradient
        np.testing.assert_allclose(g, d, rtol=1e-4, atol=2e-4 * np.abs(d).max(), err_msg=name)


@pytest.mark.slow
def test_xla_gradients_match_finite_differences(rng):
    """Directional derivatives in float64, one random direction per input (camera extrinsics included)."""
    with jax.enable_x64(True):
        scene = random_scene(rng, 20, sh_degree=1)
        cam = front_camera(24, 24)
        args = scene_args(scene, cam, np.float64)
        loss = jax.jit(make_loss(render, cam, rng, backend="xla", capacity=8192))
        grads = jax.grad(loss, argnums=range(7))(*args)
        eps = 1e-6
        for i, name in enumerate(NAMES):
            d = rng.normal(size=args[i].shape)
            if name == "viewmat":
                d[3] = 0.0  # the bottom row of a rigid transform is not a free parameter
            plus = list(args)
            minus = list(args)
            plus[i] = args[i] + eps * d
            minus[i] = args[i] - eps * d
            fd = (float(loss(*plus)) - float(loss(*minus))) / (2 * eps)
            analytic = float(np.sum(np.asarray(grads[i]) * d))
            assert abs(fd) > 1e-3, name
            np.testing.assert_allclose(analytic, fd, rtol=1e-4, err_msg=name)


def test_backward_behind_an_opaque_wall_matches_dense_and_any_loop_batch(rng):
    """The backward walks only chunks with a live pixel: behind a wall (terminated pixels) it must still
    equal autodiff of the dense splatter, give hidden Gaussians exactly 0, and not depend on how the
    compacted chunks fall into loop steps (a tile's running sum carried across steps)."""
    wall = 600  # covers whole 8 px bins: ~1/4 of the chunks in use lie behind terminated pixels
    xy = rng.uniform(-0.8, 0.8, size=(wall, 2))
    behind = random_scene(rng, 40)
    front = dict(means=np.concatenate([xy, np.full((wall, 1), -1.5)], 1), quats=rng.normal(size=(wall, 4)),
                 scales=np.full((wall, 3), 0.12), opacities=rng.uniform(0.9, 0.99, wall),
                 colors=rng.uniform(size=(wall, 3)))
    scene = {k: np.concatenate([front[k], behind[k]]).astype(np.float32) for k in behind}
    cam = front_camera(40, 32)
    args = scene_args(scene, cam)
    dense = jax.grad(make_loss(render_dense, cam, np.random.default_rng(7), block=256), argnums=range(7))(*args)
    grads = jax.grad(make_loss(render, cam, np.random.default_rng(7), backend="xla", capacity=8192),
                     argnums=range(7))(*args)
    for name, g, d in zip(NAMES, grads, dense, strict=True):
        np.testing.assert_allclose(g, d, rtol=1e-4, atol=2e-4 * np.abs(d).max(), err_msg=name)
    hidden = np.all(np.asarray(dense[4]) == 0, axis=-1)
    assert hidden.sum() > 5 and np.all(np.asarray(grads[4])[hidden] == 0)

    # The same rasterisation with 2 chunks per loop step and with all in one step: same row gradients.
    grid = binning.TileGrid(cam.width, cam.height, 1, 8)
    feats, radii, depths = project_instances(*(jnp.asarray(scene[k]) for k in ("means", "quats", "scales",
                                                                               "opacities", "colors")),
                                             cam.viewmat[None], cam.K[None], cam.width, cam.height)
    layout = binning.bin_and_sort(feats[:, MX:MY + 1], radii, feats[:, CA:CC + 1], feats[:, OP], depths, grid,
                                  capacity=8192, chunk=4)
    rows = jnp.concatenate([feats, jnp.zeros((1, feats.shape[1]))])
    index = jnp.where(layout.slot_valid, layout.slot_gid, feats.shape[0])
    cts = tuple(jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((grid.num_tiles, 64, 3), (grid.num_tiles, 64),
                                                                        (grid.num_tiles, 64)))
    d_rows = []
    for batch in (2, 512):
        spec = splat.TileSpec(grid.tiles_x, grid.tiles_per_camera, grid.num_tiles, "xla", "xla", False, batch, 8)
        out, vjp = jax.vjp(lambda r, s=spec: splat.rasterize(s, r, index, layout.chunk_tile, layout.chunk_k,
                                                              layout.chunk_last, layout.n_chunks), rows)
        d_rows.append(np.asarray(vjp(cts)[0]))
    np.testing.assert_allclose(d_rows[0], d_rows[1], rtol=1e-5, atol=1e-5 * np.abs(d_rows[1]).max())
    t0 = splat_xla.forward_rows(rows, index, layout.chunk_tile, layout.chunk_k <= 0, layout.n_chunks,
                                tiles_x=grid.tiles_x, tiles_per_camera=grid.tiles_per_camera,
                                num_tiles=grid.num_tiles, batch=64, tile_size=8)[3]
    used = np.arange(t0.shape[0]) < int(layout.n_chunks)
    assert np.sum(used & (np.max(np.asarray(t0), axis=1) < T_MIN)) > 100  # chunks the backward skips
