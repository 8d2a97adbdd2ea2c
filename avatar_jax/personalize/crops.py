"""Zoomed crop cameras on the face and the visible hands, with the photo's full-resolution crops.

In a full-body photo the face is 15-20 pixels wide at the working size: the photometric fit would
never see lips, eyes or fingers. A crop camera shares the photo camera's pose and has the intrinsics
of a square crop around the face (or a hand) keypoints, ``size x size`` pixels: rendering it against
the photo's own pixels of that crop (resampled from the full-resolution photo, not from the working
image) fits those regions at the detail the photo really has.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.body import keypoints as kp
from avatar_jax.geometry import camera as cam_lib

# name, keypoint slice, minimum confident points, margin around the keypoints' box.
REGIONS = (("face", kp.FACE, 100, 1.5), ("left_hand", kp.LEFT_HAND, 10, 1.8), ("right_hand", kp.RIGHT_HAND, 10, 1.8))


@dataclasses.dataclass(frozen=True)
class Crops:
    """``camera`` a batch of ``B`` crop cameras (``size x size``), ``photo (B,size,size,3)`` in [0,1],
    ``mask (B,size,size)``, ``boxes (B,4)`` x0, y0, side, side in photo pixels, ``names`` (B,)."""

    camera: cam_lib.Camera
    photo: np.ndarray
    mask: np.ndarray
    boxes: np.ndarray
    names: tuple


def _crop(img: np.ndarray, x0: float, y0: float, side: float, size: int) -> np.ndarray:
    """Resample the square ``[x0, x0+side) x [y0, y0+side)`` of ``img (H,W,C)`` to ``(size,size,C)``
    (zero outside the photo), antialiased."""
    h, w = img.shape[:2]
    a, b = int(np.floor(x0)), int(np.floor(y0))
    n = int(np.ceil(side)) + 1
    pad = np.zeros((n, n, img.shape[2]), np.float32)
    xs, ys = slice(max(a, 0), min(a + n, w)), slice(max(b, 0), min(b + n, h))
    pad[ys.start - b : ys.stop - b, xs.start - a : xs.stop - a] = img[ys, xs]
    # Sub-pixel shift: resize exactly the box (scale + translate) so crop and camera agree.
    s = size / side
    out = jax.image.scale_and_translate(jnp.asarray(pad), (size, size, img.shape[2]), (0, 1),
                                        jnp.array([s, s]), jnp.array([-(y0 - b) * s, -(x0 - a) * s]), "linear",
                                        antialias=True)
    return np.asarray(out)


def crop_cameras(photo: np.ndarray, mask: np.ndarray, points: np.ndarray, confidence: np.ndarray,
                 camera: cam_lib.Camera, size: int = 128, max_fraction: float = 0.5) -> Crops | None:
    """Crops of ``photo (H,W,3)`` in [0,1] and ``mask (H,W)`` around ``points (553,2)`` (photo pixels).

    ``camera`` is the photo camera at full resolution. A region is used when enough of its keypoints
    are confident and its box is under ``max_fraction`` of the photo's long side (else it is no zoom).
    Returns None when no region qualifies.
    """
    h, w = photo.shape[:2]
    cams, imgs, masks, boxes, names = [], [], [], [], []
    k_full = np.asarray(camera.K, np.float64)
    for name, sl, need, margin in REGIONS:
        ok = confidence[sl] > 0.5
        if ok.sum() < need:
            continue
        p = points[sl][ok]
        lo, hi = p.min(0), p.max(0)
        side = max(float((hi - lo).max()) * margin, 16.0)
        if side > max_fraction * max(h, w):
            continue
        cx, cy = 0.5 * (lo + hi)
        x0, y0 = cx - side / 2, cy - side / 2
        s = size / side
        k = k_full.copy()
        k[0, 0] *= s
        k[1, 1] *= s
        k[0, 2] = (k_full[0, 2] - x0) * s
        k[1, 2] = (k_full[1, 2] - y0) * s
        cams.append(cam_lib.Camera(jnp.asarray(camera.viewmat), jnp.asarray(k, jnp.float32), size, size))
        imgs.append(_crop(photo, x0, y0, side, size))
        masks.append(_crop(mask[..., None], x0, y0, side, size)[..., 0])
        boxes.append([x0, y0, side, side])
        names.append(name)
    if not cams:
        return None
    return Crops(cam_lib.stack(cams), np.clip(np.stack(imgs), 0, 1).astype(np.float32),
                 (np.stack(masks) > 0.5).astype(np.float32), np.asarray(boxes, np.float32), tuple(names))
