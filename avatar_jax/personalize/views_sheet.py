"""Front, side and back views of a reconstructed avatar, whole body and head, as one PNG (README figure).

``python -m avatar_jax.personalize.views_sheet OUT_DIR PNG [--size 240]``: ``OUT_DIR`` is a
``reconstruct`` output folder (its ``avatar.npz``).
"""

from __future__ import annotations

import argparse

import imageio.v3 as iio
import numpy as np

from avatar_jax.body import parts
from avatar_jax.gaussians import avatar_file
from avatar_jax.geometry import camera as cam_lib
from avatar_jax.personalize.reconstruct import orbit_views
from avatar_jax.render import render

AZIMUTHS = (0.0, 90.0, 180.0)  # front, side (the avatar's left), back


def head_views(cloud, azimuths_deg, size: int, distance: float = 0.9) -> np.ndarray:
    """``(V,size,size,3)`` float close-ups of the head from ``azimuths_deg`` (0 = front), on white."""
    means = np.asarray(cloud.means)
    centre = means[np.isin(np.asarray(cloud.part), parts.FACE_PARTS)].mean(0)
    cams = []
    for a in np.radians(np.asarray(azimuths_deg, np.float64)):
        eye = centre + distance * np.array([np.sin(a), 0.0, -np.cos(a)])
        cams.append(cam_lib.look_at(tuple(eye.tolist()), tuple(centre.tolist()), width=size, height=size,
                                    fov_y_deg=30.0))
    out = render(camera=cam_lib.stack(cams), background=(1.0, 1.0, 1.0), **cloud.render_args())
    return np.clip(np.asarray(out.rgb), 0, 1)


def sheet(cloud, size: int = 240) -> np.ndarray:
    """``(2*size, 3*size, 3)`` uint8: whole body (top) and head (bottom) from the front, side and back."""
    body = orbit_views(cloud, AZIMUTHS, size)
    head = head_views(cloud, AZIMUTHS, size)
    rows = [np.concatenate(list(body), 1), np.concatenate(list(head), 1)]
    return (np.concatenate(rows, 0) * 255).round().astype(np.uint8)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("png")
    p.add_argument("--size", type=int, default=240)
    a = p.parse_args(argv)
    cloud, _ = avatar_file.load_avatar(f"{a.out_dir}/avatar.npz")
    iio.imwrite(a.png, sheet(cloud, a.size))
    print(f"wrote {a.png}")


if __name__ == "__main__":
    main()
