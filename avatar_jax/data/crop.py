"""Crop policy: one fixed square crop per clip around the person, then resize to the stored size.

One crop for the whole clip (not per frame) keeps the camera static within a clip, so a clip has one
intrinsics matrix and the person's motion in the frame is real motion, not crop jitter. The box is the
union over frames of the person mask (``> 0.5``) and confident keypoints, grown by ``margin`` on each
side, made square about its centre. Where it leaves the image the frame is padded with black, which
keeps the geometry a plain pinhole (no stretching): ``u' = (u - x0)·s``, ``K' = S·T·K``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from avatar_jax.data.detect import Detections


@dataclasses.dataclass(frozen=True)
class Crop:
    x0: int  # left edge in source pixels (may be negative: padded)
    y0: int
    side: int  # square side in source pixels
    out: int  # stored image side

    @property
    def scale(self) -> float:
        return self.out / self.side

    def points(self, uv: np.ndarray) -> np.ndarray:
        """``(..., 2)`` source pixels -> stored-image pixels (continuous, 0 at the left/top edge)."""
        return ((uv - np.array([self.x0, self.y0], np.float32)) * self.scale).astype(np.float32)

    def intrinsics(self, K: np.ndarray) -> np.ndarray:
        """``K (3,3)`` of the source frame -> K of the stored image."""
        T = np.array([[self.scale, 0, -self.x0 * self.scale], [0, self.scale, -self.y0 * self.scale], [0, 0, 1]])
        return (T @ np.asarray(K, np.float64)).astype(np.float32)

    def _region(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        out = np.zeros((self.side, self.side, *image.shape[2:]), image.dtype)
        xs, ys = max(self.x0, 0), max(self.y0, 0)
        xe, ye = min(self.x0 + self.side, w), min(self.y0 + self.side, h)
        if xe > xs and ye > ys:
            out[ys - self.y0:ye - self.y0, xs - self.x0:xe - self.x0] = image[ys:ye, xs:xe]
        return out

    def image(self, image: np.ndarray) -> np.ndarray:
        """``(H,W,3)`` or ``(H,W)`` uint8 -> ``(out,out[,3])`` uint8 (antialiased bilinear)."""
        region = Image.fromarray(self._region(image))
        return np.asarray(region.resize((self.out, self.out), Image.Resampling.BILINEAR))


def person_box(det: Detections, width: int, height: int) -> tuple[float, float, float, float] | None:
    """``(x0, y0, x1, y1)`` union of the person over the clip, or None when no person is seen."""
    boxes = []
    ys, xs = np.nonzero((det.masks > 127).any(0))
    if xs.size:
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    for name in ("body", "face", "hands"):
        uv, conf = det.keypoints[name], det.keypoints[name + "_conf"]
        sel = uv[conf > 0.5]
        sel = sel[(sel[:, 0] >= 0) & (sel[:, 0] <= width) & (sel[:, 1] >= 0) & (sel[:, 1] <= height)]
        if sel.size:
            boxes.append((sel[:, 0].min(), sel[:, 1].min(), sel[:, 0].max(), sel[:, 1].max()))
    if not boxes:
        return None
    b = np.array(boxes, np.float64)
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())


def choose_crop(box: tuple[float, float, float, float], out: int, margin: float = 0.15) -> Crop:
    """Square crop around ``box`` grown by ``margin`` (fraction of its larger side) on every side."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)
    side = max(int(np.ceil(side)), 8)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    return Crop(int(np.floor(cx - side / 2)), int(np.floor(cy - side / 2)), side, out)
