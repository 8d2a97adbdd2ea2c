"""Synthetic Gaussian scenes for tests and benchmarks (numpy, seeded, float32)."""

from __future__ import annotations

import numpy as np

from avatar_jax.geometry import Camera, look_at


def random_scene(rng: np.random.Generator, n: int, *, sh_degree: int | None = None) -> dict:
    """``n`` Gaussians around the origin with a mix of hard cases, for a camera at ``(0,0,-4)``.

    Fifths of the scene are: an overlapping cluster, tiny Gaussians (footprint below a pixel),
    huge ones (covering the whole image), ones behind the camera or straddling the near plane,
    and ones projecting off-screen whose footprint may still reach the image.
    """
    k = np.arange(n) % 5
    means = rng.normal(size=(n, 3)) * 0.6
    log_s = rng.normal(size=(n, 3)) * 0.4 - 2.3
    means[k == 0] *= 0.15  # overlapping cluster
    log_s[k == 1] = rng.uniform(-9.0, -7.0, size=((k == 1).sum(), 3))  # tiny
    log_s[k == 2] = rng.uniform(-0.5, 0.5, size=((k == 2).sum(), 3))  # huge
    behind = k == 3
    means[behind, 2] = rng.uniform(-6.0, -3.99, size=behind.sum())  # z_cam in (-2, 0.01]
    offscreen = k == 4
    means[offscreen, 0] = rng.choice([-1.0, 1.0], size=offscreen.sum()) * rng.uniform(1.2, 2.5, offscreen.sum())
    scene = dict(
        means=means.astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        scales=np.exp(log_s).astype(np.float32),
        opacities=rng.uniform(0.05, 1.0, size=n).astype(np.float32),
    )
    if sh_degree is None:
        scene["colors"] = rng.uniform(size=(n, 3)).astype(np.float32)
    else:
        scene["colors"] = (rng.normal(size=(n, (sh_degree + 1) ** 2, 3)) * 0.3).astype(np.float32)
    return scene


def person_scene(rng: np.random.Generator, n: int) -> dict:
    """``n`` small Gaussians on the surface of a standing figure ~1.75 m tall (head, torso, arms, legs).

    Built from capsules/ellipsoids, so density and overlap per tile look like a real avatar.
    """
    # (centre, radii) of ellipsoids, metres, y up, subject facing -z.
    parts = np.array([
        [0.0, 1.62, 0.0, 0.10, 0.12, 0.11],  # head
        [0.0, 1.25, 0.0, 0.19, 0.28, 0.12],  # torso
        [0.0, 0.92, 0.0, 0.17, 0.10, 0.11],  # pelvis
        [-0.30, 1.20, 0.0, 0.05, 0.27, 0.05], [0.30, 1.20, 0.0, 0.05, 0.27, 0.05],  # arms
        [-0.10, 0.45, 0.0, 0.07, 0.42, 0.07], [0.10, 0.45, 0.0, 0.07, 0.42, 0.07],  # legs
    ])
    weights = np.prod(parts[:, 3:], axis=1) ** (2 / 3)
    which = rng.choice(len(parts), size=n, p=weights / weights.sum())
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    means = parts[which, :3] + d * parts[which, 3:] - np.array([0.0, 0.9, 0.0])
    return dict(
        means=means.astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        scales=np.exp(rng.normal(size=(n, 3)) * 0.3 - 4.6).astype(np.float32),  # ~1 cm
        opacities=rng.uniform(0.3, 1.0, size=n).astype(np.float32),
        colors=rng.uniform(size=(n, 3)).astype(np.float32),
    )


def front_camera(width: int, height: int, distance: float = 4.0, fov_y_deg: float = 40.0) -> Camera:
    """A camera on the -z axis looking at the origin."""
    return look_at((0.0, 0.0, -distance), width=width, height=height, fov_y_deg=fov_y_deg)


def crowded_tile_scene(rng: np.random.Generator, n: int, camera: Camera, *, scale: float, opacity: float) -> dict:
    """``n`` small isotropic Gaussians spread over the image of a 16x16 ``camera`` (one tile), depth 3.5-4.5."""
    f = float(camera.K[0, 0])
    xy = rng.uniform(0.0, 16.0, size=(n, 2))
    z = rng.uniform(3.5, 4.5, size=n)
    means = np.stack([(xy[:, 0] - 8.0) * z / f, (xy[:, 1] - 8.0) * z / f, z - 4.0], -1).astype(np.float32)
    return dict(means=means, quats=np.tile([1.0, 0, 0, 0], (n, 1)).astype(np.float32),
                scales=np.full((n, 3), scale, np.float32), opacities=np.full(n, opacity, np.float32),
                colors=rng.uniform(size=(n, 3)).astype(np.float32))


def border_scene(rng: np.random.Generator, n: int, camera: Camera) -> dict:
    """``n`` Gaussians close to a single ``camera`` (z 0.05-0.6) at the edges of its view and beyond.

    Their ``x/z``, ``y/z`` lie between 0.7 and 2.5 times ``tan(fov/2)``, so many sit past the Jacobian
    clamp (1.3 tan(fov/2)) while their footprints still reach the image: the case the clamp is for.
    """
    vm, K = np.asarray(camera.viewmat, np.float64), np.asarray(camera.K, np.float64)
    tan_x, tan_y = camera.width / (2 * K[0, 0]), camera.height / (2 * K[1, 1])
    z = rng.uniform(0.05, 0.6, size=n)
    sx, sy = rng.choice([-1.0, 1.0], size=(2, n))
    x = sx * rng.uniform(0.7, 2.5, size=n) * tan_x * z
    y_out = sy * rng.uniform(0.7, 2.5, size=n) * tan_y  # half of them also past the top/bottom edge
    y = np.where(rng.uniform(size=n) < 0.5, y_out, rng.uniform(-1, 1, n) * tan_y) * z
    cam_pts = np.stack([x, y, z, np.ones(n)], -1)
    world = (np.linalg.inv(vm) @ cam_pts.T).T[:, :3]
    return dict(means=world.astype(np.float32), quats=rng.normal(size=(n, 4)).astype(np.float32),
                scales=np.exp(rng.uniform(np.log(0.005), np.log(0.05), size=(n, 3))).astype(np.float32),
                opacities=rng.uniform(0.2, 1.0, size=n).astype(np.float32),
                colors=rng.uniform(size=(n, 3)).astype(np.float32))
