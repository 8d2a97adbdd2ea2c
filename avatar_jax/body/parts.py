"""Body-part ids carried by template vertices and by the Gaussians bound to them.

The ids come from anny's body-part segmentation (see ``make_template.py``); ``FACE_PARTS`` and
``HAND_PARTS`` group them for the coarse face / hands / body split the model and losses use.
"""

from __future__ import annotations

import numpy as np

BODY, HEAD, HAND_L, HAND_R, EYES, MOUTH, FEET = range(7)
NAMES = ("body", "head", "hand_left", "hand_right", "eyes", "mouth", "feet")
FACE_PARTS = (HEAD, EYES, MOUTH)
HAND_PARTS = (HAND_L, HAND_R)

# Coarse groups: 0 body, 1 face, 2 hands.
COARSE_BODY, COARSE_FACE, COARSE_HANDS = 0, 1, 2


def coarse(labels: np.ndarray) -> np.ndarray:
    """Fine part ids ``(...,)`` -> coarse group ids ``(...,)`` (0 body, 1 face, 2 hands)."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, COARSE_BODY, np.int8)
    out[np.isin(labels, FACE_PARTS)] = COARSE_FACE
    out[np.isin(labels, HAND_PARTS)] = COARSE_HANDS
    return out
