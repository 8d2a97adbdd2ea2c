"""MediaPipe Holistic over a frame sequence (video mode, with tracking); run as a subprocess.

MediaPipe 0.10.21 needs protobuf < 5 and grain needs protobuf >= 5.28, so MediaPipe lives in its own
interpreter (``make mediapipe-venv``). This file imports only numpy and mediapipe:
``python mediapipe_video_worker.py FRAMES.npy OUT.npz``. ``FRAMES.npy`` is ``(T,H,W,3) uint8``; the output
holds ``pose (T,33,3)`` (x, y pixels, visibility), ``face (T,478,3)``, ``left_hand``/``right_hand
(T,21,3)`` (x, y, confidence 1 when found) and ``mask (T,H,W) uint8``; missing parts have confidence 0.
"""

import sys

import numpy as np


def _points(landmarks, width, height, n, visibility):
    out = np.zeros((n, 3), np.float32)
    if landmarks is not None:
        for k, p in enumerate(landmarks.landmark):
            out[k] = (p.x * width, p.y * height, p.visibility if visibility else 1.0)
    return out


def main(src: str, dst: str) -> int:
    import mediapipe as mp

    frames = np.load(src)
    t, h, w = frames.shape[:3]
    out = {"pose": np.zeros((t, 33, 3), np.float32), "face": np.zeros((t, 478, 3), np.float32),
           "left_hand": np.zeros((t, 21, 3), np.float32), "right_hand": np.zeros((t, 21, 3), np.float32),
           "mask": np.zeros((t, h, w), np.uint8)}
    # model_complexity=1: its pose model ships in the wheel (0 and 2 would be downloaded)
    with mp.solutions.holistic.Holistic(static_image_mode=False, model_complexity=1, enable_segmentation=True,
                                        refine_face_landmarks=True) as holistic:
        for i in range(t):
            r = holistic.process(np.ascontiguousarray(frames[i]))
            out["pose"][i] = _points(r.pose_landmarks, w, h, 33, True)
            out["face"][i] = _points(r.face_landmarks, w, h, 478, False)
            out["left_hand"][i] = _points(r.left_hand_landmarks, w, h, 21, False)
            out["right_hand"][i] = _points(r.right_hand_landmarks, w, h, 21, False)
            if r.segmentation_mask is not None:
                out["mask"][i] = np.clip(r.segmentation_mask * 255.0 + 0.5, 0, 255).astype(np.uint8)
    np.savez(dst, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
