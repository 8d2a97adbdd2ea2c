"""Does MediaPipe's face detector find a face on a canonical avatar's head seen from behind?

``python -m avatar_jax.personalize.back_views OUT_DIR [--azimuths 0,150,180,210]`` renders close-ups of
the head of ``OUT_DIR/avatar.npz`` (a ``reconstruct`` folder) from the given azimuths (0 = front) and runs
the face detector on each, twice: on the avatar as it is, and on a control whose whole head (face, eyes
and lips included) is one flat colour, the median of the back of the head (its hair). A detection the
control shares comes from the head's outline, not from any face texture on the back of the head.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

from avatar_jax.body import parts
from avatar_jax.gaussians import avatar_file
from avatar_jax.gaussians.cloud import GaussianCloud, dc_from_rgb, rgb_from_dc
from avatar_jax.geometry import camera as cam_lib
from avatar_jax.personalize import detect
from avatar_jax.render import render


def head_views(cloud: GaussianCloud, azimuths_deg, size: int = 256) -> np.ndarray:
    """Close-ups ``(V,size,size,3)`` uint8 of the head from azimuths (0 = front), on white: a 30° lens
    0.9 m from the centre of the face parts."""
    means = np.asarray(cloud.means)
    centre = means[np.isin(np.asarray(cloud.part), parts.FACE_PARTS)].mean(0)
    cams = []
    for a in np.radians(np.asarray(azimuths_deg, np.float64)):
        eye = centre + 0.9 * np.array([np.sin(a), 0.0, -np.cos(a)])
        cams.append(cam_lib.look_at(tuple(eye), tuple(centre), width=size, height=size, fov_y_deg=30.0))
    out = render(camera=cam_lib.stack(cams), background=(1.0, 1.0, 1.0), **cloud.render_args())
    return (np.clip(np.asarray(out.rgb), 0, 1) * 255).astype(np.uint8)


def flat_head(cloud: GaussianCloud, colour=None) -> tuple[GaussianCloud, np.ndarray]:
    """``cloud`` with every head Gaussian (eyes, lips too) one colour ``(3,)`` RGB in [0,1]: ``colour``, by
    default the median of the head Gaussians facing backwards (canonical normal z > 0.5; the body faces -z)."""
    from avatar_jax.personalize.photometric import normals_of

    part = np.asarray(cloud.part)
    head = np.isin(part, parts.FACE_PARTS)
    rgb = np.asarray(rgb_from_dc(cloud.sh[:, 0])).copy()
    back = head & (np.asarray(normals_of(cloud))[:, 2] > 0.5)
    if colour is None:
        colour = np.median(rgb[back if back.any() else head], axis=0)
    rgb[head] = colour
    return cloud.replace(sh=cloud.sh.at[:, 0].set(dc_from_rgb(jnp.asarray(rgb)))), colour


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="a reconstruct output folder (holds avatar.npz)")
    ap.add_argument("--azimuths", default="0,150,180,210", help="degrees, comma-separated (0 = front)")
    ap.add_argument("--flat", default="", help="R,G,B in [0,1] for the control's head (default: its hair)")
    args = ap.parse_args(argv)
    try:
        azimuths = [float(a) for a in args.azimuths.split(",")]
        flat = [float(c) for c in args.flat.split(",")] if args.flat else None
    except ValueError:
        ap.error(f"--azimuths and --flat must be numbers separated by commas, got {args.azimuths!r}, {args.flat!r}")
    if flat is not None and (len(flat) != 3 or not all(0.0 <= c <= 1.0 for c in flat)):
        ap.error(f"--flat must be three numbers in [0,1] (R,G,B), got {args.flat!r}")
    cloud, _ = avatar_file.load_avatar(f"{args.folder}/avatar.npz")
    control, colour = flat_head(cloud, None if flat is None else np.asarray(flat, np.float32))
    print(f"control: whole head one colour {np.round(colour, 3).tolist()}")
    print("azimuth  faces(avatar)  faces(flat-colour head)")
    for a, v, c in zip(azimuths, head_views(cloud, azimuths), head_views(control, azimuths), strict=True):
        print(f"{a:7.1f}  {len(detect.face_boxes(v)):13d}  {len(detect.face_boxes(c)):23d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
