"""``export_workdir``: a training workdir's latest checkpoint -> an inference bundle.

Reads ``WORKDIR/config.json``, restores the newest complete step through the run's
:class:`~avatar_jax.train.checkpoint.Checkpointer` on a one-device mesh, rebuilds the canonical
avatar the run trained on (its dataset's avatar, or ``train.avatar``) and the clips' camera, and
hands them to :func:`~avatar_jax.export.bundle.export_bundle`. This is the one place export touches
training code; loading a bundle never does.
"""

from __future__ import annotations

import math
import os

import numpy as np

from avatar_jax.export.bundle import DEFAULT_RESOLUTIONS, export_bundle
from avatar_jax.export.layout import PLATFORMS


def camera_from_view(viewmat: np.ndarray, K: np.ndarray, height: int, centre: np.ndarray) -> dict:
    """A world-to-camera ``viewmat (4,4)`` and ``K (3,3)`` -> ``dict(eye, target, up, fov_y_deg)``."""
    rot, trans = np.asarray(viewmat, np.float64)[:3, :3], np.asarray(viewmat, np.float64)[:3, 3]
    eye = -rot.T @ trans
    forward, down = rot[2], rot[1]
    dist = max(float(np.dot(centre - eye, forward)), 1e-3)
    fov = math.degrees(2 * math.atan(0.5 * height / float(K[1][1])))
    return dict(eye=eye.tolist(), target=(eye + dist * forward).tolist(), up=(-down).tolist(), fov_y_deg=fov)


def export_workdir(workdir: str, out: str, *, data_root: str | None = None,
                   resolutions=DEFAULT_RESOLUTIONS, platforms=PLATFORMS, capacity_factor: float = 4.0,
                   progress=None) -> tuple[str, int]:
    """Export the latest checkpoint of ``workdir`` to the bundle ``out``; returns ``(out, step)``."""
    from avatar_jax.train.restore import restore_run

    run = restore_run(workdir, data_root=data_root)
    config, step, source, trained = run.config, run.step, run.source, run.trained
    first = source[0]
    centre = np.asarray(trained.avatar.means).mean(0)
    camera = camera_from_view(first["viewmat"], first["K"], int(source.height), centre)
    export_bundle(out, config=config, graphdef=run.graphdef, params=run.params, avatar=trained.avatar,
                  resolutions=resolutions, platforms=platforms, camera=camera, capacity_factor=capacity_factor,
                  source=f"{os.path.abspath(workdir)} step {step}", progress=progress)
    return out, step
