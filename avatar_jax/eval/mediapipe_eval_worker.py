"""MediaPipe Hands or Face Mesh over a frame sequence for the metrics; run as a subprocess.

MediaPipe lives in its own interpreter (protobuf < 5, see :mod:`avatar_jax.data.mediapipe_video_worker`),
so this file imports only numpy and mediapipe: ``python mediapipe_eval_worker.py FRAMES.npy OUT.npz MODE``
with ``FRAMES.npy (T,H,W,3) uint8`` and MODE

- ``hands``: ``hands (T,2,21,2)`` pixels, ``score (T,2)`` MediaPipe's hand (handedness) confidence, 0 when
  the hand is not found. Slot 0 is the subject's left hand: MediaPipe labels hands as if the image were
  mirrored, so on camera frames its "Right" is the subject's left.
- ``face``: ``face (T,478,2)`` pixels (468 mesh points + 10 iris), ``found (T,)`` uint8.
"""

import sys

import numpy as np


def hands(frames: np.ndarray) -> dict:
    import mediapipe as mp

    t, h, w = frames.shape[:3]
    points, score = np.zeros((t, 2, 21, 2), np.float32), np.zeros((t, 2), np.float32)
    # model_complexity=1 (the "full" landmark model) ships in the wheel.
    with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1,
                                  min_detection_confidence=0.5, min_tracking_confidence=0.5) as model:
        for i in range(t):
            r = model.process(np.ascontiguousarray(frames[i]))
            if not r.multi_hand_landmarks:
                continue
            for lms, handed in zip(r.multi_hand_landmarks, r.multi_handedness, strict=True):
                c = handed.classification[0]
                slot = 0 if c.label == "Right" else 1
                if score[i, slot] > 0:  # two hands with one label: the second takes the free slot
                    slot = 1 - slot
                if score[i, slot] > 0:
                    continue
                points[i, slot] = [(p.x * w, p.y * h) for p in lms.landmark]
                score[i, slot] = c.score
    return {"hands": points, "score": score}


def face(frames: np.ndarray) -> dict:
    import mediapipe as mp

    t, h, w = frames.shape[:3]
    points, found = np.zeros((t, 478, 2), np.float32), np.zeros((t,), np.uint8)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                         min_detection_confidence=0.5) as model:
        for i in range(t):
            r = model.process(np.ascontiguousarray(frames[i]))
            if r.multi_face_landmarks:
                points[i] = [(p.x * w, p.y * h) for p in r.multi_face_landmarks[0].landmark]
                found[i] = 1
    return {"face": points, "found": found}


def main(src: str, dst: str, mode: str) -> int:
    modes = {"hands": hands, "face": face}
    if mode not in modes:
        print(f"unknown mode {mode!r}; use one of {sorted(modes)}", file=sys.stderr)
        return 2
    np.savez(dst, **modes[mode](np.load(src)))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
